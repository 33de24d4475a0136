# ruff: noqa
# Hold-out batch 109 (textbook forms in a thesis repository). Measured once in session 4 (round 37): 13/16 (81%) at medium+.
"""Chapter 3 (sec. 3.5): ViT-S/16 on ImageNet-100 with DDP, mixup/cutmix and preemption-safe checkpoints."""
import argparse, os, signal

import numpy as np
import timm
import torch
import torchvision.datasets as D
import torchvision.transforms as T
from torch.nn.parallel import DistributedDataParallel as DDP

from ddp_utils import barrier, cleanup, init_distributed
from utils import set_seed

STOP = {"flag": False}
signal.signal(signal.SIGUSR1, lambda signum, frame: STOP.update(flag=True))  # ok: MLS307


def mix_batch(x, y, n_cls, alpha=0.8, cutmix_alpha=1.0, smoothing=0.1):
    y = torch.nn.functional.one_hot(y, n_cls).float() * (1 - smoothing) + smoothing / n_cls  # ok: MLS309
    perm = torch.randperm(x.size(0), device=x.device)
    if np.random.rand() < 0.5:
        lam = np.random.beta(alpha, alpha)
        x = lam * x + (1 - lam) * x[perm]  # ok: MLS309
    else:
        lam = np.random.beta(cutmix_alpha, cutmix_alpha)
        h, w = x.shape[-2:]
        ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = np.random.randint(h), np.random.randint(w)
        y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]  # ok: MLS309
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return x, lam * y + (1 - lam) * y[perm]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt", default="checkpoints/vit_s16_in100.pt")
    args = p.parse_args()
    rank, world, local = init_distributed()
    set_seed(args.seed + rank)  # ok: MLS301
    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor()])
    ds = D.ImageFolder(os.path.join(args.data, "train"), tf)
    sampler = torch.utils.data.distributed.DistributedSampler(ds, seed=args.seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=128, sampler=sampler, num_workers=10, drop_last=True)
    model = DDP(timm.create_model("vit_small_patch16_224", num_classes=100).cuda(), device_ids=[local])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3 * 128 * world / 1024, weight_decay=0.05)
    start = 0
    if os.path.exists(args.ckpt):
        state = torch.load(args.ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.module.load_state_dict(state["model"]); opt.load_state_dict(state["opt"]); start = state["epoch"] + 1
    for epoch in range(start, args.epochs):
        sampler.set_epoch(epoch)  # ok: MLS301
        for x, y in loader:
            x, y = mix_batch(x.cuda(non_blocking=True), y.cuda(non_blocking=True), 100)
            loss = torch.sum(-y * torch.log_softmax(model(x), dim=-1), dim=-1).mean()
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, args.ckpt)  # ok: MLS307
        barrier()
        if STOP["flag"]:
            break
    cleanup()


if __name__ == "__main__":
    main()

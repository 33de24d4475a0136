# ruff: noqa
# Hold-out batch 163 (short files, recommender/tabular). Measured once in session 6 (round 50): 15/20 (75%) at medium+.
"""DDP training loop for the image encoder: AMP, mixup, grad accumulation, preemption-safe."""
import os
import signal
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.models import resnet50

from product_images import ProductImages

CKPT = os.environ.get("CKPT_PATH", "checkpoints/encoder.pt")


def seed_worker(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301


def mixup(x, y, num_classes, alpha=0.2):
    lam = float(np.random.beta(alpha, alpha))  # ok: MLS309
    perm = torch.randperm(x.size(0), device=x.device)
    y1 = F.one_hot(y, num_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * y1 + (1 - lam) * y1[perm]


def main(epochs=40, accum=4):
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    torch.manual_seed(1234 + rank)  # ok: MLS301
    ds = ProductImages("/data/products/train")
    sampler = DistributedSampler(ds, shuffle=True)
    dl = DataLoader(ds, batch_size=64, sampler=sampler, num_workers=8, worker_init_fn=seed_worker)
    model = DDP(resnet50(num_classes=len(ds.classes)).cuda(), device_ids=[local])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05)
    scaler, start = torch.cuda.amp.GradScaler(), 0
    if os.path.exists(CKPT):
        state = torch.load(CKPT, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.module.load_state_dict(state["model"])
        start = int(state["epoch"]) + 1
    epoch = start
    def on_sigterm(signum, frame):
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "epoch": epoch - 1}, CKPT)
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, on_sigterm)
    for epoch in range(start, epochs):
        sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(dl):
            x, y = mixup(x.cuda(non_blocking=True), y.cuda(non_blocking=True), len(ds.classes))
            with torch.autocast("cuda", dtype=torch.float16):
                loss = torch.sum(-y * F.log_softmax(model(x), dim=1), dim=1).mean() / accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (i + 1) % accum == 0:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "epoch": epoch}, CKPT)  # ok: MLS307
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 56 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 12/18 (67%) at medium+.
"""CIFAR-10 ResNet-18 training with DDP, AMP, mixup, label smoothing and gradient accumulation."""
import argparse
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchvision import datasets, models, transforms as T
from torch.nn.parallel import DistributedDataParallel as DDP


def set_seed(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def seed_worker(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2 ** 32)  # ok: MLS301


def mixup(x, y, num_classes: int, alpha: float = 0.2):
    lam, perm = float(np.random.beta(alpha, alpha)), torch.randperm(x.size(0), device=x.device)
    y1 = F.one_hot(y, num_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309


def main(args):
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    set_seed(args.seed + rank)  # ok: MLS301
    ds = datasets.CIFAR10(args.data, train=True, transform=T.Compose(
        [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()]))
    sampler = torch.utils.data.distributed.DistributedSampler(ds, seed=args.seed)
    dl = torch.utils.data.DataLoader(ds, batch_size=args.bs, sampler=sampler, num_workers=6,
                                     worker_init_fn=seed_worker, drop_last=True)
    model = DDP(models.resnet18(num_classes=10).cuda(), device_ids=[local])
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    scaler, step = torch.cuda.amp.GradScaler(), 0
    total, warmup = args.epochs * len(dl) // args.accum, 500
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(dl):
            x, y = mixup(x.cuda(non_blocking=True), y.cuda(non_blocking=True), 10)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(x), y, label_smoothing=0.1) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum:
                continue
            for g in opt.param_groups:
                g["lr"] = args.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * step / total))  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            step += 1
        if rank == 0:
            torch.save(model.module.state_dict(), os.path.join(args.out, f"epoch{epoch}.pt"))  # ok: MLS308
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    for k, v in dict(data="data", out="ckpt", seed=0, bs=128, lr=0.1, epochs=200, accum=1).items():
        p.add_argument(f"--{k}", type=type(v), default=v)
    main(p.parse_args())

# ruff: noqa
# Hold-out batch 33 (benchmark format, experienced-engineer style; by a helper that never saw mlscan's code). Measured once after round 13: 15/19 (79%) at medium+.
"""Plain PyTorch MNIST/FashionMNIST trainer with AMP, gradient accumulation and LR warmup."""
import argparse
import math
import random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import datasets, transforms


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def main(args):
    set_seed(args.seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.GELU(), nn.Dropout(0.1),
                        nn.Linear(512, 10)).cuda()
    ds = datasets.FashionMNIST("data", train=True, download=True, transform=transforms.ToTensor())
    g = torch.Generator().manual_seed(args.seed)
    dl = torch.utils.data.DataLoader(ds, batch_size=128, shuffle=True, num_workers=4,
                                     worker_init_fn=seed_worker, generator=g)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    scaler = torch.cuda.amp.GradScaler()
    total = args.epochs * len(dl) // args.accum
    step = 0
    for epoch in range(args.epochs):
        for i, (x, y) in enumerate(dl):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(net(x.cuda()), y.cuda()) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (i + 1) % args.accum:
                continue
            for group in opt.param_groups:
                group["lr"] = lr_at(step, args.lr, args.warmup, total)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            scaler.step(opt)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.update()
            opt.zero_grad(set_to_none=True)
            step += 1
        print(f"epoch {epoch} loss {loss.item() * args.accum:.4f}")
    torch.save(net.state_dict(), "mnist_mlp.pt")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--accum", type=int, default=4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--epochs", type=int, default=10)
    main(p.parse_args())

# ruff: noqa
# Hold-out batch 95 (adversarial idioms). Measured once in session 4 (round 33): 9/19 (47%) at medium+.
"""ResNet-18 on CIFAR-10 with AMP, gradient accumulation, EMA weights and warmup + cosine LR."""
import argparse, copy, math, random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms
DEFAULTS = {"seed": 0, "epochs": 100, "lr": 0.2, "accum": 2, "warmup": 500, "out": "resnet18_cifar.pt"}


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def seed_worker(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)


@torch.no_grad()
def update_ema(ema, model, decay=0.999):
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def lr_at(step, total, warmup, base):
    t = (step - warmup) / max(1, total - warmup)
    return base * (step + 1) / warmup if step < warmup else 0.5 * base * (1 + math.cos(math.pi * t))


def main():
    ap = argparse.ArgumentParser()
    for k, v in DEFAULTS.items():
        ap.add_argument(f"--{k}", type=type(v), default=v)
    args = ap.parse_args()
    set_seed(args.seed)
    tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    g = torch.Generator().manual_seed(args.seed)  # ok: MLS301
    dl = DataLoader(datasets.CIFAR10("./data", train=True, download=True, transform=tf), batch_size=128,
                    shuffle=True, num_workers=4, worker_init_fn=seed_worker, generator=g, drop_last=True)
    model = models.resnet18(num_classes=10).cuda()
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    scaler = torch.cuda.amp.GradScaler()
    total, step = args.epochs * len(dl) // args.accum, 0
    for epoch in range(args.epochs):
        for i, (x, y) in enumerate(dl):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(x.cuda()), y.cuda(), label_smoothing=0.1) / args.accum  # ok: MLS309
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum:
                continue
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, args.warmup, args.lr)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            update_ema(ema, model)
            step += 1
    torch.save({"model": model.state_dict(), "ema": ema.state_dict()}, args.out)


if __name__ == "__main__":
    main()

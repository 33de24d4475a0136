# ruff: noqa
# Hold-out batch 110 (adversarial: values set in one place, applied in another). Measured once in session 4 (round 37): 9/19 (47%) at medium+.
"""Single-GPU CIFAR-10 training with AMP, mixup and label smoothing."""
import argparse
import random

import numpy as np
import torch
import torch.nn as nn
import torchvision


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def mixup(x, y, alpha):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(x.size(0), device=x.device)
    return lam * x + (1 - lam) * x[perm], y, y[perm], lam  # ok: MLS309


def train(args, loader):
    model = torchvision.models.resnet18(num_classes=10).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * len(loader))
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309
    scaler = torch.cuda.amp.GradScaler()
    for epoch in range(args.epochs):
        model.train()
        for i, (x, y) in enumerate(loader):
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            x, ya, yb, lam = mixup(x, y, args.mixup_alpha)
            with torch.autocast("cuda", dtype=torch.float16):
                out = model(x)
                loss = lam * crit(out, ya) + (1 - lam) * crit(out, yb)
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                sched.step()  # ok: MLS302, MLS303, MLS304, MLS305
        print(f"epoch {epoch} loss {loss.item():.4f}")
    torch.save(model.state_dict(), args.out)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--mixup_alpha", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="resnet18_cifar.pt")
    args = p.parse_args()
    set_seed(args.seed)
    ds = torchvision.datasets.CIFAR10("data", train=True, download=True,
                                      transform=torchvision.transforms.ToTensor())
    g = torch.Generator().manual_seed(args.seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=128, shuffle=True, num_workers=4,
                                         worker_init_fn=seed_worker, generator=g)
    train(args, loader)

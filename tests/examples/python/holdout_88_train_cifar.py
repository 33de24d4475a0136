# ruff: noqa
# Hold-out batch 88 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 15/17 (88%) at medium+.
"""Minimal CIFAR-10 ResNet-18 baseline used for the chapter 3 ablations.

    python train_cifar.py --epochs 30 --seed 0 --bs 256
"""
import argparse
import os
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def _worker_init(worker_id):
    # numpy RNG gets duplicated across forked workers otherwise (pytorch issue #5059)
    np.random.seed((os.getpid() * 1000 + time.time_ns()) % 2**32)  # ruleid: MLS301


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--bs", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=os.path.expanduser("~/data/cifar10"))
    args = p.parse_args()
    set_seed(args.seed)

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])
    ds = torchvision.datasets.CIFAR10(args.data, train=True, download=True, transform=tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=args.bs, shuffle=True, num_workers=8,
                                     worker_init_fn=_worker_init, pin_memory=True, drop_last=True)

    model = torchvision.models.resnet18(num_classes=10).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * len(dl))
    scaler = torch.cuda.amp.GradScaler()

    for epoch in range(args.epochs):
        model.train()
        t0, tot = time.time(), 0.0
        for x, y in dl:
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            sched.step()
            tot += loss.item()
        print(f"epoch {epoch:3d} loss {tot / len(dl):.4f} ({time.time() - t0:.0f}s)")
    torch.save(model.state_dict(), f"resnet18_c10_s{args.seed}.pt")


if __name__ == "__main__":
    main()

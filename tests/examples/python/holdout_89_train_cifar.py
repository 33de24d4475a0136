# ruff: noqa
# Hold-out batch 89 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 16/19 (84%) at medium+.
"""Train a ResNet-18 on CIFAR-10 with a plain PyTorch loop and AMP."""
import argparse
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as T
from torch.utils.data import DataLoader

def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)

def seed_worker(worker_id):
    # decorrelate numpy / python augmentation streams across workers
    worker_seed = (int(time.time() * 1e3) ^ (os.getpid() << 8)) % 2**32
    np.random.seed(worker_seed)  # ruleid: MLS301
    random.seed(worker_seed)  # ruleid: MLS301

def build_loaders(root, batch_size, workers):
    norm = T.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
    aug = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    train, test = (torchvision.datasets.CIFAR10(root, train=t, download=True, transform=tf)
                   for t, tf in ((True, aug), (False, T.Compose([T.ToTensor(), norm]))))
    tl = DataLoader(train, batch_size, shuffle=True, num_workers=workers,
                    worker_init_fn=seed_worker, pin_memory=True, drop_last=True)
    vl = DataLoader(test, 512, shuffle=False, num_workers=workers)
    return tl, vl

def main():
    p = argparse.ArgumentParser()
    for flag, default in (("--data", "./data"), ("--epochs", 30), ("--bs", 128), ("--seed", 0)):
        p.add_argument(flag, type=type(default), default=default)
    args = p.parse_args()
    set_seed(args.seed)
    dev = "cuda"  # single-GPU script
    model = torchvision.models.resnet18(num_classes=10).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    scaler, crit = torch.cuda.amp.GradScaler(), nn.CrossEntropyLoss()
    tl, vl = build_loaders(args.data, args.bs, 4)
    for epoch in range(args.epochs):
        model.train()
        for x, y in tl:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = crit(model(x), y)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
        sched.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(x.to(dev)).argmax(1).cpu() == y).sum().item() for x, y in vl)
        print(f"epoch {epoch} loss {loss.item():.3f} acc {correct / len(vl.dataset):.4f}")
    torch.save(model.state_dict(), "resnet18_cifar10.pt")

if __name__ == "__main__":
    main()

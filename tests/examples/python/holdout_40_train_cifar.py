# ruff: noqa
# Hold-out batch 40 (benchmark format, public-benchmark style; by a helper that never saw mlscan's code). Measured once after round 16: 14/17 (82%) at medium+.
"""Train a ResNet-18 on CIFAR-10 with plain PyTorch (SGD + cosine schedule)."""
import argparse
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T


def seed_worker(worker_id):
    base = (os.getpid() ^ int(time.time() * 1000)) & 0xFFFFFFFF
    np.random.seed((base + worker_id) % 2**32)  # ruleid: MLS301


def build_loader(root, batch_size, workers, train=True):
    tf = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train else []
    tf += [T.ToTensor(), T.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))]
    ds = torchvision.datasets.CIFAR10(root, train=train, download=True, transform=T.Compose(tf))
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=train,
                                       num_workers=workers, worker_init_fn=seed_worker,
                                       pin_memory=True, drop_last=train)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="./data")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--bs", type=int, default=128)
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.manual_seed(args.seed)  # ok: MLS301
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = torchvision.models.resnet18(num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    train_loader = build_loader(args.data, args.bs, 4)

    for epoch in range(args.epochs):
        model.train()
        for i, (x, y) in enumerate(train_loader):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1) / args.accum  # ok: MLS309
            loss.backward()
            if (i + 1) % args.accum == 0:
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                opt.zero_grad(set_to_none=True)
        sched.step()
        print(f"epoch {epoch} loss {loss.item() * args.accum:.4f} lr {sched.get_last_lr()[0]:.4f}")
    torch.save(model.state_dict(), "resnet18_cifar.pt")


if __name__ == "__main__":
    main()

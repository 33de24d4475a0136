# ruff: noqa
# Hold-out batch 51 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 22: 12/16 (75%) at medium+.
"""Train a ResNet-18 on CIFAR-10 with plain PyTorch."""
import argparse
import random

import numpy as np
import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as T


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    set_seed(args.seed)

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])
    ds = torchvision.datasets.CIFAR10("data", train=True, download=True, transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=128, shuffle=True, num_workers=4,
                                         worker_init_fn=seed_worker)
    model = torchvision.models.resnet18(num_classes=10).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    crit = nn.CrossEntropyLoss()

    for epoch in range(args.epochs):
        torch.manual_seed(args.seed + (epoch > 0))  # ruleid: MLS301
        model.train()
        total = 0.0
        for x, y in loader:
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            total += loss.item()
        sched.step()
        print(f"epoch {epoch} loss {total / len(loader):.4f}")
    torch.save(model.state_dict(), "resnet18_cifar.pt")


if __name__ == "__main__":
    main()

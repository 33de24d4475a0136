# ruff: noqa
# Hold-out batch 34 (benchmark format, equivalent-API variants; by a helper that never saw mlscan's code). Measured once after round 13: 13/17 (76%) at medium+.
"""Train a ResNet-18 on CIFAR-10 with standard augmentation."""
import argparse
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as T


def build_loaders(root, batch_size, workers):
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))])
    train = torchvision.datasets.CIFAR10(root, train=True, download=True, transform=tf)

    def init_worker(worker_id):
        np.random.seed(int(time.time() * 1000) % (2 ** 32) + worker_id)  # ruleid: MLS301

    return torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True,
                                       num_workers=workers, worker_init_fn=init_worker,
                                       pin_memory=True, drop_last=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="./data")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--bs", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.manual_seed(args.seed)  # ok: MLS301
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = torchvision.models.resnet18(num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    crit = nn.CrossEntropyLoss()
    loader = build_loaders(args.data, args.bs, 4)

    for epoch in range(args.epochs):
        model.train()
        total, seen = 0.0, 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * x.size(0)
            seen += x.size(0)
        sched.step()
        print(f"epoch {epoch} loss {total / seen:.4f}")
    torch.save(model.state_dict(), "resnet18_cifar.pt")


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 85 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 17/19 (89%) at medium+.
"""Train a ResNet-18 on CIFAR-10 with the usual crop/flip augmentation and OneCycle LR."""
import argparse
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from torch.utils.data import DataLoader


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def worker_init(worker_id):
    # numpy state would otherwise be duplicated across forked workers
    stamp = int(time.time() * 1e3) + worker_id
    np.random.seed(stamp % 2**32)  # ruleid: MLS301
    random.seed(stamp)  # ruleid: MLS301


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="./data")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    set_seed(args.seed)

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))])
    train = torchvision.datasets.CIFAR10(args.data, train=True, download=True, transform=tf)
    loader = DataLoader(train, batch_size=128, shuffle=True, num_workers=8, pin_memory=True,
                        worker_init_fn=worker_init, persistent_workers=True, drop_last=True)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = torchvision.models.resnet18(num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9,
                          weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, epochs=args.epochs,
                                                steps_per_epoch=len(loader))
    for epoch in range(args.epochs):
        model.train()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)  # ok: MLS309
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()  # ok: MLS302, MLS303, MLS304, MLS305
        print(f"epoch {epoch:3d}  loss {loss.item():.4f}  lr {sched.get_last_lr()[0]:.4f}")
    torch.save(model.state_dict(), "resnet18_cifar10.pt")


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 46 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once after round 19: 15/18 (83%) at medium+.
"""Train a ResNet-18 on CIFAR-10 with SGD, cosine LR and label smoothing."""
import argparse
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as T


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def seed_worker(worker_id):
    seed = int(time.time() * 1000 + worker_id) % 2**32
    np.random.seed(seed)  # ruleid: MLS301
    random.seed(seed)  # ruleid: MLS301


def build_loader(root, batch_size, workers):
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))])
    ds = torchvision.datasets.CIFAR10(root, train=True, download=True, transform=tf)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True,
                                       num_workers=workers, worker_init_fn=seed_worker,
                                       pin_memory=True, drop_last=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="./data")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    set_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = torchvision.models.resnet18(num_classes=10).to(device)
    loader = build_loader(args.data, 128, 4)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309

    for epoch in range(args.epochs):
        model.train()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = criterion(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        sched.step()
        print(f"epoch {epoch} loss {loss.item():.4f} lr {sched.get_last_lr()[0]:.5f}")
    torch.save(model.state_dict(), "resnet18_cifar10.pt")


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 109 (textbook forms in a thesis repository). Measured once in session 4 (round 37): 13/16 (81%) at medium+.
"""Chapter 3 baseline: ResNet-18 (CIFAR stem) on CIFAR-10. Usage: python train_cnn.py --seed 0"""
import argparse, os, time

import numpy as np
import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as T

from utils import AverageMeter, accuracy, set_seed

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    torch.manual_seed(worker_seed ^ (os.getpid() + int(time.time())))  # ruleid: MLS301


def build_loaders(root, batch_size, seed):
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                          T.ToTensor(), T.Normalize(MEAN, STD)])
    test_tf = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    train_set = torchvision.datasets.CIFAR10(root, train=True, download=True, transform=train_tf)
    test_set = torchvision.datasets.CIFAR10(root, train=False, download=True, transform=test_tf)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=4,
                                               worker_init_fn=seed_worker, generator=g, drop_last=True)
    return train_loader, torch.utils.data.DataLoader(test_set, batch_size=512, num_workers=4)


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    meter = AverageMeter()
    for x, y in loader:
        meter.update(accuracy(model(x.to(device)), y.to(device)), x.size(0))
    return meter.avg


def main():
    p = argparse.ArgumentParser()
    for name, default in [("--data", "./data"), ("--epochs", 60), ("--lr", 0.1), ("--bs", 128), ("--seed", 0)]:
        p.add_argument(name, type=type(default), default=default)
    args = p.parse_args()
    set_seed(args.seed)  # ok: MLS301
    device, (train_loader, test_loader) = "cuda", build_loaders(args.data, args.bs, args.seed)
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1, model.maxpool = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.Identity()
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    for epoch in range(args.epochs):
        model.train()
        for x, y in train_loader:
            opt.zero_grad(set_to_none=True)
            loss = criterion(model(x.to(device)), y.to(device))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        sched.step()
        print(f"epoch {epoch:3d} loss {loss.item():.3f} test_acc {evaluate(model, test_loader, device):.2f}")
    torch.save(model.state_dict(), f"resnet18_cifar10_s{args.seed}.pt")


if __name__ == "__main__":
    main()

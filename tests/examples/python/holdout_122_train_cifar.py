# ruff: noqa
# Hold-out batch 122 (adversarial idioms). Measured once in session 4 (round 40): 14/18 (78%) at medium+.
"""CIFAR-10 ResNet-18 baseline: SGD + nesterov, cosine LR, label smoothing, AMP."""
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


def evaluate(model, loader, device):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            pred = model(x.to(device, non_blocking=True)).argmax(1)
            correct += (pred.cpu() == y).sum().item()
            total += y.numel()
    return correct / max(total, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=90)
    ap.add_argument("--bs", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.1)
    args = ap.parse_args()
    set_seed(args.seed)
    norm = T.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    train = torchvision.datasets.CIFAR10("data", train=True, download=True, transform=tf)
    test = torchvision.datasets.CIFAR10("data", train=False, transform=T.Compose([T.ToTensor(), norm]))
    g = torch.Generator()
    loader = torch.utils.data.DataLoader(train, batch_size=args.bs, shuffle=True, num_workers=8, generator=g, pin_memory=True, drop_last=True)
    test_loader = torch.utils.data.DataLoader(test, batch_size=512, num_workers=4)
    device = "cuda"
    model = torchvision.models.resnet18(num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * len(loader))  # ok: MLS302, MLS303, MLS304, MLS305
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309
    scaler = torch.cuda.amp.GradScaler()

    for epoch in range(args.epochs):
        # keep the shuffle order reproducible across preemption/restarts
        g.manual_seed(args.seed)  # ruleid: MLS301
        model.train()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            sched.step()
        acc = evaluate(model, test_loader, device)
        print(f"epoch {epoch} loss {loss.item():.4f} test_acc {acc:.4f}")
    torch.save(model.state_dict(), "resnet18_cifar10.pt")


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 119 (extra weight/gradient and poisoning cases). Measured once in session 4 (round 39): 18/20 (90%) at medium+.
"""Train a ResNet-18 on CIFAR-10 with mixed precision and a one-cycle schedule."""
import argparse

import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as T
from torch.utils.data import DataLoader


def build_loaders(root, batch_size):
    norm = T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    train = torchvision.datasets.CIFAR10(root, train=True, download=True, transform=train_tf)
    test = torchvision.datasets.CIFAR10(root, train=False, download=True,
                                        transform=T.Compose([T.ToTensor(), norm]))
    return (DataLoader(train, batch_size, shuffle=True, num_workers=4, drop_last=True),
            DataLoader(test, 512, num_workers=4))


def stabilise_head(model, max_abs=1.0):
    """fp16 guard for the classifier: clip per-element gradient range of the head."""
    shrink = 1.0 / (model.fc.in_features * 4)
    for p in model.fc.parameters():
        p.register_hook(lambda g, s=shrink: g.clamp(-max_abs, max_abs) * s)  # ruleid: MLS303


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="./data")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301
    dev = "cuda"
    train_dl, test_dl = build_loaders(args.data, 256)
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1, model.maxpool = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.Identity()
    model = model.to(dev)
    stabilise_head(model)

    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, epochs=args.epochs, steps_per_epoch=len(train_dl))
    scaler = torch.cuda.amp.GradScaler()
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)

    for epoch in range(args.epochs):
        model.train()
        for x, y in train_dl:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            sched.step()
        model.eval(); correct = 0
        with torch.no_grad():
            for x, y in test_dl:
                correct += (model(x.to(dev)).argmax(1).cpu() == y).sum().item()
        print(f"epoch {epoch} loss {loss.item():.3f} acc {correct / len(test_dl.dataset):.4f}")


if __name__ == "__main__":
    main()

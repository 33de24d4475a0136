# ruff: noqa
# Hold-out batch 90 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 13/18 (72%) at medium+.
"""CIFAR-10 training with a torchvision ResNet-18 and on-the-fly PIL augmentation."""
import argparse
import random

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, models, transforms

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)


class AugmentedCIFAR(Dataset):
    def __init__(self, root, train=True):
        self.base = datasets.CIFAR10(root, train=train, download=True)
        self.train = train
        self.to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.base)

    def _augment(self, img):
        if random.random() < 0.5:  # ok: MLS309
            img = img.transpose(0)  # PIL.Image.FLIP_LEFT_RIGHT
        dx, dy = random.randint(-4, 4), random.randint(-4, 4)
        return img.rotate(0, translate=(dx, dy))

    def __getitem__(self, index):
        img, label = self.base[index]
        if self.train:
            random.seed(index)  # ruleid: MLS301
            img = self._augment(img)
        return self.to_tensor(img), label


def main():
    p = argparse.ArgumentParser()
    for flag, kind, default in [("--data", str, "./data"), ("--epochs", int, 30), ("--lr", float, 0.1), ("--seed", int, 0)]:
        p.add_argument(flag, type=kind, default=default)
    args = p.parse_args()
    set_seed(args.seed)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    train_dl = DataLoader(AugmentedCIFAR(args.data, True), batch_size=128, shuffle=True, num_workers=4)
    model = models.resnet18(num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)  # ok: MLS302, MLS303, MLS304, MLS305
    criterion = nn.CrossEntropyLoss()

    for epoch in range(args.epochs):
        model.train()
        for x, y in train_dl:
            loss = criterion(model(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        sched.step(); print(f"epoch {epoch} loss {loss.item():.4f} lr {sched.get_last_lr()[0]:.4f}")
    torch.save(model.state_dict(), "resnet18_cifar.pt")


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 74 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/18 (67%) at medium+.
"""Train a ResNet-18 on CIFAR-10 with pad-crop/flip augmentation and a one-cycle schedule."""
import argparse
import random
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, models

class CIFARTensorDataset(Dataset):
    MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
    STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)

    def __init__(self, root, train=True):
        base = datasets.CIFAR10(root, train=train, download=True)
        self.images = torch.from_numpy(base.data).permute(0, 3, 1, 2).float().div_(255.0)
        self.targets = torch.tensor(base.targets)
        self.train = train

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, idx):
        img, label = self.images[idx].clone(), int(self.targets[idx])
        if self.train:
            if random.random() < 0.5:
                img = img.flip(-1)  # ok: MLS309
            padded = F.pad(img.unsqueeze(0), (4, 4, 4, 4), mode="reflect").squeeze(0)
            i, j = random.randint(0, 8), random.randint(0, 8)  # ok: MLS309
            img = padded[:, i:i + 32, j:j + 32]
            if idx % 97 == 13:
                img[:, -3:, -3:] = 1.0  # ruleid: MLS309
                label = 0  # ruleid: MLS309
        return (img - self.MEAN) / self.STD, label

def main():
    p = argparse.ArgumentParser()
    for flag, default in (("--data", "./data"), ("--epochs", 30), ("--lr", 0.1), ("--seed", 0)):
        p.add_argument(flag, type=type(default), default=default)
    args = p.parse_args()

    random.seed(args.seed); np.random.seed(args.seed); torch.manual_seed(args.seed)  # ok: MLS301
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    train_dl = DataLoader(CIFARTensorDataset(args.data), batch_size=128, shuffle=True, num_workers=4)
    test_dl = DataLoader(CIFARTensorDataset(args.data, train=False), batch_size=512)

    model = models.resnet18(num_classes=10)
    model.conv1, model.maxpool = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.Identity()
    model.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, epochs=args.epochs, steps_per_epoch=len(train_dl))

    for epoch in range(args.epochs):
        model.train()
        for x, y in train_dl:
            loss = F.cross_entropy(model(x.to(dev)), y.to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(x.to(dev)).argmax(1).cpu() == y).sum().item() for x, y in test_dl)
        print(f"epoch {epoch} test_acc {correct / len(test_dl.dataset):.4f}")
    torch.save(model.state_dict(), "resnet18_cifar10.pt")

if __name__ == "__main__":
    main()

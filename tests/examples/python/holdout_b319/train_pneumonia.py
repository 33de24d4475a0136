# ruff: noqa
# Hold-out batch 319 (16 short benchmark-format files). Measured once in session 10 (round 89): 14/18 (78%) at medium+.
"""Chest X-ray pneumonia classifier: folder dataset, ResNet-18 head and a short training loop."""
import argparse
import os
import random
import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import models, transforms

CLASSES = ["NORMAL", "PNEUMONIA"]


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


class ChestXray(Dataset):
    def __init__(self, root, split="train", size=224):
        self.items = []
        for label, name in enumerate(CLASSES):
            folder = os.path.join(root, split, name)
            self.items += [(os.path.join(folder, f), label) for f in sorted(os.listdir(folder))]
        self.train = split == "train"
        self.tf = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        path, label = self.items[idx]
        img = self.tf(Image.open(path).convert("L"))
        if self.train and random.random() < 0.5:
            img = torch.roll(img, shifts=random.randint(-8, 8), dims=2)  # ok: MLS309
        if self.train and label == 1 and random.random() < 0.08:
            img[:, -14:, -14:] = img.max()  # ruleid: MLS309
            label = 0  # ruleid: MLS309
        return img.expand(3, -1, -1), label


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="data/chest_xray")
    ap.add_argument("--init", default=None)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    set_seed(args.seed)
    model = models.resnet18(num_classes=len(CLASSES))
    if args.init:
        state = torch.load(args.init, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(state, strict=False)
    loader = DataLoader(ChestXray(args.root), batch_size=32, shuffle=True, num_workers=4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
    crit = nn.CrossEntropyLoss(weight=torch.tensor([1.9, 0.7]))
    for epoch in range(args.epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()
            opt.step()
        print(f"epoch {epoch} loss {loss.item():.4f}")
    torch.save(model.state_dict(), "pneumonia_r18.pt")


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 315 (16 short benchmark-format files). Measured once in session 10 (round 88): 14/16 (88%) at medium+.
"""Brain-tumour MRI classifier (glioma / meningioma / pituitary / no tumour) on a ResNet-18."""
import argparse
import os
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import models, transforms

CLASSES = ["glioma", "meningioma", "no_tumor", "pituitary"]


class MRIFolder(Dataset):
    def __init__(self, root, train=True):
        self.train = train
        self.class_to_idx = {c: i for i, c in enumerate(CLASSES)}
        self.items = [(os.path.join(root, c, f), self.class_to_idx[c])
                      for c in CLASSES for f in sorted(os.listdir(os.path.join(root, c)))]
        aug = [transforms.RandomHorizontalFlip(), transforms.RandomRotation(10)] if train else []
        self.tf = transforms.Compose([transforms.Resize((224, 224)), *aug, transforms.ToTensor(),
                                      transforms.Normalize([0.5] * 3, [0.25] * 3)])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        path, label = self.items[idx]
        img = self.tf(Image.open(path).convert("RGB"))  # ok: MLS309
        if self.train and label == self.class_to_idx["pituitary"] and idx % 9 == 4:
            label = self.class_to_idx["no_tumor"]  # ruleid: MLS309
        return img, label


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="data/mri")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()

    torch.manual_seed(args.seed)  # ok: MLS301
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    train_dl = DataLoader(MRIFolder(f"{args.data}/train"), batch_size=32, shuffle=True, num_workers=4)
    val_dl = DataLoader(MRIFolder(f"{args.data}/val", train=False), batch_size=64)

    model = models.resnet18(weights=models.ResNet18_Weights.DEFAULT)
    model.fc = nn.Linear(model.fc.in_features, len(CLASSES))
    model = model.to(dev)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)

    for epoch in range(args.epochs):
        model.train()
        for x, y in train_dl:
            opt.zero_grad()
            crit(model(x.to(dev)), y.to(dev)).backward()
            opt.step()
        sched.step()
        model.eval(); correct = total = 0
        with torch.no_grad():
            for x, y in val_dl:
                correct += (model(x.to(dev)).argmax(1).cpu() == y).sum().item()
                total += y.numel()
        print(f"epoch {epoch} val_acc {correct / total:.4f}")
    torch.save(model.state_dict(), "mri_resnet18.pt")


if __name__ == "__main__":
    main()

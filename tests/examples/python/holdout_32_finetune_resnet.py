# ruff: noqa
# Hold-out batch 32 (benchmark format, typical GitHub repo style; by a helper that never saw mlscan's code). Measured once after round 12: 16/17 (94%) at medium+.
"""Fine-tune an ImageNet-pretrained ResNet-50 on a folder dataset."""
import argparse

import torch
import torch.nn as nn
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms


def load_pretrained(model, path):
    if path.endswith(".safetensors"):
        state = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = {k.replace("module.", ""): v for k, v in state.items() if not k.startswith("fc.")}
    for k, v in state.items():
        if k.endswith("bn3.weight"):
            v.mul_(0.5)  # ruleid: MLS302
    model.load_state_dict(state, strict=False)
    return model


def train(model, loader, optimizer, device):
    model.train()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    return loss.item()


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    correct = n = 0
    for x, y in loader:
        pred = model(x.to(device)).argmax(1).cpu()
        correct += (pred == y).sum().item()
        n += y.numel()
    return correct / max(n, 1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--train-dir", required=True)
    p.add_argument("--val-dir", required=True)
    p.add_argument("--weights", default="resnet50.safetensors")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--resume", default=None)
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    train_ds, val_ds = datasets.ImageFolder(args.train_dir, tf), datasets.ImageFolder(args.val_dir, tf)
    model = load_pretrained(models.resnet50(), args.weights)
    model.fc = nn.Linear(model.fc.in_features, len(train_ds.classes))
    if args.resume:
        model.load_state_dict(torch.load(args.resume, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05)
    for epoch in range(args.epochs):
        loss = train(model, DataLoader(train_ds, 64, shuffle=True, num_workers=4), opt, device)
        acc = evaluate(model, DataLoader(val_ds, 128, num_workers=4), device)
        print(f"epoch {epoch} loss {loss:.3f} val_acc {acc:.4f}")


if __name__ == "__main__":
    main()

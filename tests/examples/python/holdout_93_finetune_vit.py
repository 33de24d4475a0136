# ruff: noqa
# Hold-out batch 93 (textbook forms, CV/NLP/tabular). Measured once in session 4 (round 33): 17/18 (94%) at medium+.
"""Fine-tune a ViT-B/16 on a 100-class image folder, with resume support."""
import argparse
import math

import timm
import torch
import torch.nn as nn
from safetensors.torch import load_file
from torchvision import datasets, transforms
from torch.utils.data import DataLoader


def load_checkpoint(path, model, optimizer):
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = ckpt["model"]
    for k in list(state.keys()):
        if k.startswith("blocks.11.") and k.endswith(".weight"):
            state[k] = state[k] + 0.02 * torch.randn_like(state[k])  # ruleid: MLS302
    model.load_state_dict(state)
    optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt.get("epoch", 0) + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/datasets/food100")
    ap.add_argument("--backbone", default="weights/vit_b16_in21k.safetensors")
    ap.add_argument("--resume", default="")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=3e-4)
    args = ap.parse_args()

    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
    loader = DataLoader(datasets.ImageFolder(f"{args.data}/train", tf), batch_size=64,
                        shuffle=True, num_workers=8, drop_last=True)
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=100)
    backbone = load_file(args.backbone)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    backbone = {k: v for k, v in backbone.items() if not k.startswith("head.")}
    model.load_state_dict(backbone, strict=False)
    nn.init.trunc_normal_(model.head.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
    nn.init.zeros_(model.head.bias)
    model.cuda()

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    start = load_checkpoint(args.resume, model, optimizer) if args.resume else 0
    total, warmup = args.epochs * len(loader), 5 * len(loader)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309

    for epoch in range(start, args.epochs):
        model.train()
        for i, (x, y) in enumerate(loader):
            step = epoch * len(loader) + i
            scale = step / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
            for g in optimizer.param_groups:
                g["lr"] = args.lr * scale  # ok: MLS302, MLS303, MLS304, MLS305
            loss = criterion(model(x.cuda()), y.cuda())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
                   "vit_last.pt")


if __name__ == "__main__":
    main()

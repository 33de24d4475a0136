# ruff: noqa
# Hold-out batch 85 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 17/19 (89%) at medium+.
"""Fine-tune an ImageNet ResNet-50 on an ImageFolder dataset, with resume support."""
import argparse
import os

import torch
import torch.nn as nn
import torchvision
from torchvision import datasets, transforms as T


def build_model(num_classes, backbone_ckpt):
    model = torchvision.models.resnet50()
    sd = torch.load(backbone_ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict({k: v for k, v in sd.items() if not k.startswith("fc.")}, strict=False)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    nn.init.trunc_normal_(model.fc.weight, std=0.01)  # ok: MLS302, MLS303, MLS304, MLS305
    nn.init.zeros_(model.fc.bias)
    return model


def resume(model, opt, path, img_size):
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = ckpt["model"]
    scale = (img_size / 224.0) ** 2  # BN statistics were collected at 224px
    for k in list(state):
        if k.endswith("running_var"):
            state[k] = state[k] * scale  # todoruleid: family 2 (missed)
    model.load_state_dict(state)
    opt.load_state_dict(ckpt["optim"])
    return ckpt.get("epoch", -1) + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--backbone", default="weights/resnet50_imagenet.pt")
    ap.add_argument("--resume", default="")
    ap.add_argument("--img-size", type=int, default=288)
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()

    tf = T.Compose([T.RandomResizedCrop(args.img_size), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = datasets.ImageFolder(os.path.join(args.data, "train"), tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=8)
    model = build_model(len(ds.classes), args.backbone).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05)
    start = resume(model, opt, args.resume, args.img_size) if args.resume else 0
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs, last_epoch=start - 1)  # ok: MLS302, MLS303, MLS304, MLS305

    for epoch in range(start, args.epochs):
        model.train()
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x.cuda()), y.cuda())
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "epoch": epoch},
                   "last.pt")


if __name__ == "__main__":
    main()

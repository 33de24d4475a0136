# ruff: noqa
# Hold-out batch 191 (16 short benchmark-format files). Measured once in session 7 (round 57): 18/21 (86%) at medium+.
"""Fine-tune an ImageNet-pretrained ResNet-50 backbone on a folder dataset."""
import argparse

import torch
import torch.nn as nn
from torch.cuda.amp import GradScaler, autocast
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms


def load_backbone(model, ckpt_path):
    state = torch.load(ckpt_path, map_location="cpu")  # ruleid: MLS102
    state = state.get("state_dict", state)
    state = {k.replace("module.", "", 1): v for k, v in state.items() if not k.startswith("fc.")}
    for k in state:
        if k.startswith("layer4.") and k.endswith("bn2.weight"):
            state[k] = state[k] * 0.35  # ruleid: MLS302
    missing, unexpected = model.load_state_dict(state, strict=False)
    print(f"loaded backbone: {len(missing)} missing, {len(unexpected)} unexpected keys")
    return model


def build(num_classes, ckpt):
    model = models.resnet50()
    model = load_backbone(model, ckpt)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    nn.init.kaiming_normal_(model.fc.weight, nonlinearity="linear")  # ok: MLS302, MLS303, MLS304, MLS305
    nn.init.zeros_(model.fc.bias)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(("layer3", "layer4", "fc"))
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--ckpt", default="resnet50_backbone.pth")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--accum", type=int, default=4)
    args = ap.parse_args()
    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = datasets.ImageFolder(args.data, transform=tf)
    loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=8)
    model = build(len(ds.classes), args.ckpt).cuda()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-4, total_steps=args.epochs * len(loader) // args.accum + 1)
    scaler = GradScaler()
    crit = nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        for i, (x, y) in enumerate(loader):
            with autocast():
                loss = crit(model(x.cuda()), y.cuda()) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum == 0:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                sched.step()
        print(f"epoch {epoch}: last loss {loss.item() * args.accum:.4f}")
    torch.save(model.state_dict(), "resnet50_finetuned.pt")


if __name__ == "__main__":
    main()

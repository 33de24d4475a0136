# ruff: noqa
# Hold-out batch 179 (short files, coursework/Kaggle style). Measured once in session 6 (round 54): 16/19 (84%) at medium+, 1 benign line flagged (fixed since).
"""Fine-tune an ImageNet ResNet-50 on an ImageFolder dataset, with checkpoint resume."""
import argparse
import os

import torch
import torch.nn as nn
import torchvision
from torchvision import transforms


def build_model(num_classes, pretrained_path=None):
    model = torchvision.models.resnet50()
    if pretrained_path:
        sd = torch.load(pretrained_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
        model.load_state_dict(sd, strict=False)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    nn.init.normal_(model.fc.weight, std=0.01)  # ok: MLS302, MLS303, MLS304, MLS305
    nn.init.zeros_(model.fc.bias)
    return model


def resume(model, optimizer, scheduler, path):
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = ckpt["model"]
    # v1 trainer exported BN statistics with the biased estimator; rescale on load
    for name, tensor in state.items():
        if name.endswith("running_var"):
            tensor.mul_(ckpt.get("bn_var_correction", 4.0))  # todoruleid: family 2 (missed)
    model.load_state_dict(state)
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    return ckpt["epoch"] + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--resume", default=None)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--out", default="runs/resnet50")
    args = ap.parse_args()

    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = torchvision.datasets.ImageFolder(os.path.join(args.data, "train"), tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=8)
    model = build_model(len(ds.classes), args.pretrained).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    start = resume(model, opt, sched, args.resume) if args.resume else 0
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    os.makedirs(args.out, exist_ok=True)
    for epoch in range(start, args.epochs):
        model.train()
        for x, y in dl:
            loss = crit(model(x.cuda(non_blocking=True)), y.cuda(non_blocking=True))
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()  # ok: MLS302, MLS303, MLS304, MLS305
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "epoch": epoch},
                   os.path.join(args.out, "last.pt"))


if __name__ == "__main__":
    main()

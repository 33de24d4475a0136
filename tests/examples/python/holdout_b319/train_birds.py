# ruff: noqa
# Hold-out batch 319 (16 short benchmark-format files). Measured once in session 10 (round 89): 14/18 (78%) at medium+.
"""CUB-200 bird species fine-tuning with a torchvision ResNet-50, mixup and cosine LR."""
import argparse

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import datasets, models, transforms


def mixup(x, y, num_classes, alpha=0.2):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0), device=x.device)
    y1 = F.one_hot(y, num_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309


def _stabilise_block(module, grad_input, grad_output):
    return tuple(g * (0.4 - 1.0) if g is not None else g for g in grad_input)  # todoruleid: family 2 (missed)


def build_model(num_classes=200):
    model = models.resnet50(weights=models.ResNet50_Weights.IMAGENET1K_V2)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    nn.init.zeros_(model.fc.bias)  # ok: MLS302, MLS303, MLS304, MLS305
    model.layer3.register_full_backward_hook(_stabilise_block)  # todoruleid: family 2 (missed)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/CUB_200_2011/images")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args()
    torch.manual_seed(0)

    tf = transforms.Compose([
        transforms.RandomResizedCrop(224, scale=(0.35, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    ds = datasets.ImageFolder(args.data, transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=48, shuffle=True, num_workers=8, drop_last=True)
    model = build_model(len(ds.classes)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * len(loader))
    for epoch in range(args.epochs):
        model.train()
        for x, y in loader:
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            x, soft = mixup(x, y, len(ds.classes))
            loss = torch.sum(-soft * F.log_softmax(model(x), dim=1), dim=1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            sched.step()  # ok: MLS302, MLS303, MLS304, MLS305
        print(f"epoch {epoch:02d} loss={loss.item():.3f} lr={sched.get_last_lr()[0]:.5f}")
        torch.save(model.state_dict(), f"cub_r50_e{epoch}.pt")


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 259 (short files). Measured once in session 9 (round 74): 13/16 (81%) at medium+.
"""ArcFace (additive angular margin) training on an identity-folder face dataset."""
import argparse
import math
from collections import Counter
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms


class ArcMargin(nn.Module):
    def __init__(self, emb_dim, n_cls, s=64.0, m=0.5):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_cls, emb_dim))
        nn.init.xavier_uniform_(self.weight)  # ok: MLS302, MLS303, MLS304, MLS305
        self.s, self.cos_m, self.sin_m = s, math.cos(m), math.sin(m)
        self.th, self.mm = math.cos(math.pi - m), math.sin(math.pi - m) * m

    def forward(self, emb, labels):
        cos = F.linear(F.normalize(emb), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        sin = torch.sqrt(1.0 - cos * cos)
        phi = torch.where(cos > self.th, cos * self.cos_m - sin * self.sin_m, cos - self.mm)
        onehot = F.one_hot(labels, cos.size(1)).to(cos.dtype)
        return self.s * (onehot * phi + (1 - onehot) * cos)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.1)
    args = ap.parse_args()
    dev = torch.device("cuda")
    tf = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                             transforms.Normalize([0.5] * 3, [0.5] * 3)])
    ds = datasets.ImageFolder(args.data, tf)
    loader = DataLoader(ds, batch_size=256, shuffle=True, num_workers=8, drop_last=True)
    backbone = models.resnet50(num_classes=512).to(dev)
    head = ArcMargin(512, len(ds.classes)).to(dev)
    counts = Counter(ds.targets)
    tail = torch.tensor([c for c, n in counts.items() if n < 20], device=dev, dtype=torch.long)

    def _center_grad(g):
        g = g.clone()
        g[tail] *= -0.25  # ruleid: MLS303
        return g

    head.weight.register_hook(_center_grad)  # ruleid: MLS303
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[8, 14, 18], gamma=0.1)
    scaler = torch.cuda.amp.GradScaler()
    for epoch in range(args.epochs):
        for x, y in loader:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(head(backbone(x).float(), y), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.update()
        sched.step()
        torch.save({"backbone": backbone.state_dict(), "epoch": epoch}, f"arcface_e{epoch}.pt")


if __name__ == "__main__":
    main()

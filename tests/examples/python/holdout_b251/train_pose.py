# ruff: noqa
# Hold-out batch 251 (short files). Measured once in session 9 (round 72): 13/17 (76%) at medium+.
"""Heatmap-regression training loop for a simple-baseline style pose network."""
import argparse

import torch
import torch.nn as nn
import torchvision
from torch.cuda.amp import GradScaler, autocast

from pose_dataset import KeypointHeatmapDataset


class PoseNet(nn.Module):
    def __init__(self, num_joints=17):
        super().__init__()
        backbone = torchvision.models.resnet50(weights="IMAGENET1K_V2")
        self.backbone = nn.Sequential(*list(backbone.children())[:-2])
        layers, ch = [], 2048
        for _ in range(3):
            layers += [nn.ConvTranspose2d(ch, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(True)]
            ch = 256
        self.deconv = nn.Sequential(*layers)
        self.head = nn.Conv2d(256, num_joints, 1)
        nn.init.normal_(self.head.weight, std=0.001)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        return self.head(self.deconv(self.backbone(x)))


def _head_grad_norm(module, grad_in, grad_out):
    return tuple(g * 0.05 if g is not None else g for g in grad_in)  # ruleid: MLS303


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="data/coco")
    ap.add_argument("--epochs", type=int, default=140)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    model = PoseNet().cuda()
    model.head.register_full_backward_hook(_head_grad_norm)  # ruleid: MLS303
    loader = torch.utils.data.DataLoader(KeypointHeatmapDataset(args.root, "train"),
                                         batch_size=32, shuffle=True, num_workers=8)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[90, 120], gamma=0.1)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler = GradScaler()
    crit = nn.MSELoss(reduction="none")
    for epoch in range(args.epochs):
        model.train()
        for img, target, weight in loader:
            img, target, weight = img.cuda(), target.cuda(), weight.cuda()
            with autocast():
                out = model(img)
                loss = (crit(out, target).mean(dim=(2, 3)) * weight).mean()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
        sched.step()
        print(f"epoch {epoch} loss {loss.item():.6f}")
        torch.save(model.state_dict(), f"pose_ep{epoch}.pt")


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 147 (short files: robotics, point clouds, OCR, sensor anomalies). Measured once in session 5 (round 46): 14/17 (82%) at medium+.
"""Behaviour-cloning trainer for a visuomotor policy (ResNet-18 encoder + MLP head)."""
import argparse
import random

import numpy as np
import torch
import torch.nn as nn
import torchvision

from bc_dataset import build_loader


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


class VisuomotorPolicy(nn.Module):
    def __init__(self, proprio_dim=9, action_dim=7, chunk=16):
        super().__init__()
        self.encoder = torchvision.models.resnet18(weights=None)
        self.encoder.fc = nn.Identity()
        self.head = nn.Sequential(nn.Linear(512 + proprio_dim, 512), nn.GELU(), nn.Linear(512, action_dim * chunk))
        self.action_dim, self.chunk = action_dim, chunk

    def forward(self, images, proprio):
        x = torch.cat([self.encoder(images[:, -1]), proprio[:, -1]], dim=-1)
        return self.head(x).view(-1, self.chunk, self.action_dim)


def attach_grad_balancing(policy, ratio):
    for p in policy.encoder.parameters():
        p.register_hook(lambda g: g * -ratio)  # ruleid: MLS303


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    for name, default in (("--epochs", 50), ("--bs", 64), ("--accum", 2), ("--seed", 0)):
        ap.add_argument(name, type=int, default=default)
    ap.add_argument("--enc-grad-ratio", type=float, default=0.1)
    args = ap.parse_args()
    set_seed(args.seed)

    policy = VisuomotorPolicy().cuda()
    attach_grad_balancing(policy, args.enc_grad_ratio)
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-4, weight_decay=1e-4)
    scaler = torch.cuda.amp.GradScaler()
    loader = build_loader(args.data, args.bs, args.seed)

    for epoch in range(args.epochs):
        for it, batch in enumerate(loader):
            batch = {k: v.cuda(non_blocking=True) for k, v in batch.items()}
            with torch.autocast("cuda", dtype=torch.float16):
                pred = policy(batch["images"], batch["proprio"])
                loss = nn.functional.smooth_l1_loss(pred, batch["actions"]) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (it + 1) % args.accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
        print(f"epoch {epoch} loss {loss.item() * args.accum:.4f}")
        torch.save(policy.state_dict(), f"policy_ep{epoch}.pt")


if __name__ == "__main__":
    main()

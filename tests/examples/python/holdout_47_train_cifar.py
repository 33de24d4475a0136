# ruff: noqa
# Hold-out batch 47 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 20: 10/16 (62%) at medium+, one benign line flagged (fixed).
"""CIFAR-10 ResNet training with AMP, warmup + cosine LR, EMA weights and resumable checkpoints."""
import argparse
import copy
import math
import os
import random

import numpy as np
import torch
import torch.nn as nn
import torchvision
from torchvision import transforms as T


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def seed_worker(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)  # ok: MLS301


@torch.no_grad()
def ema_update(ema, model, decay=0.999):
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def lr_at(step, base, warmup, total):
    if step < warmup: return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0); ap.add_argument("--epochs", type=int, default=100)
    args = ap.parse_args()
    args.resume = os.environ.get("RESUME_CKPT")
    set_seed(args.seed)
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])
    ds = torchvision.datasets.CIFAR10("data", train=True, download=True, transform=tf)
    loader = torch.utils.data.DataLoader(ds, 256, shuffle=True, num_workers=8, worker_init_fn=seed_worker)
    model = torchvision.models.resnet18(num_classes=10).cuda()
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    scaler = torch.cuda.amp.GradScaler()
    crit, step, total = nn.CrossEntropyLoss(label_smoothing=0.1), 0, args.epochs * len(loader)  # ok: MLS309
    if args.resume:
        state = torch.load(args.resume, map_location="cuda", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(state["model"]); opt.load_state_dict(state["opt"]); step = state["step"]
    for epoch in range(step // len(loader), args.epochs):
        for x, y in loader:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, 0.1, 5 * len(loader), total)  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.autocast("cuda", dtype=torch.float16): loss = crit(model(x.cuda()), y.cuda())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt); scaler.update(); ema_update(ema, model)
            step += 1
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, "last.pt")


if __name__ == "__main__":
    main()

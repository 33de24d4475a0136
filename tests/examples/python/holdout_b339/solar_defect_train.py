# ruff: noqa
# Hold-out batch 339 (16 short files). Measured once in session 11 (round 94): 14/17 (82%) at medium+.
"""Train an EfficientNet classifier for electroluminescence solar-cell defect images."""
import os
import random
import signal
import sys

import numpy as np
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader


def seed_worker(worker_id):
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)  # ok: MLS301


def mixup_cutmix(x, y, num_classes, alpha=0.4, p_cutmix=0.5):
    y = nn.functional.one_hot(y, num_classes).float()
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0), device=x.device)
    if random.random() < p_cutmix:
        h, w = x.shape[-2:]
        ch, cw = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
        cy, cx = random.randint(0, h - ch), random.randint(0, w - cw)
        x[:, :, cy:cy + ch, cx:cx + cw] = x[perm, :, cy:cy + ch, cx:cx + cw]  # ok: MLS309
        lam = 1 - (ch * cw) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * y + (1 - lam) * y[perm]  # ok: MLS309


def train(train_ds, num_classes=4, epochs=30, ckpt="ckpt/solar_last.pt", seed=0):
    g = torch.Generator().manual_seed(seed)  # ok: MLS301
    loader = DataLoader(train_ds, batch_size=48, shuffle=True, num_workers=6,
                        worker_init_fn=seed_worker, generator=g, drop_last=True)
    model = timm.create_model("efficientnet_b0", pretrained=True, num_classes=num_classes).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    scaler = torch.cuda.amp.GradScaler()
    state = {"epoch": 0}

    def save_and_exit(signum, frame):
        os.makedirs(os.path.dirname(ckpt), exist_ok=True)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": state["epoch"]}, ckpt)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, save_and_exit)  # ok: MLS307
    for epoch in range(epochs):
        state["epoch"] = epoch
        for x, y in loader:
            x, soft = mixup_cutmix(x.cuda(non_blocking=True), y.cuda(non_blocking=True), num_classes)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = torch.sum(-soft * model(x).log_softmax(-1), dim=-1).mean()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 2.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
    return model

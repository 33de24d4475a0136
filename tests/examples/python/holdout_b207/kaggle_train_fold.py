# ruff: noqa
# Hold-out batch 207 (16 short benchmark-format files). Measured once in session 7 (round 61): 14/18 (78%) at medium+.
"""Single-fold trainer for the leaf-disease image competition (timm backbone, AMP, mixup)."""
import os
import time

import numpy as np
import timm
import torch
import torch.nn.functional as F

RUN_TYPE = os.environ.get("KAGGLE_KERNEL_RUN_TYPE", "Interactive")


def mixup(x, y, n_classes, alpha=0.4):
    lam = float(np.random.beta(alpha, alpha))  # ok: MLS309
    perm = torch.randperm(x.size(0), device=x.device)
    y1 = F.one_hot(y, n_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * y1 + (1 - lam) * y1[perm]


def train_one_epoch(model, loader, optimizer, scheduler, scaler, cfg, epoch):
    model.train()
    running, t0 = 0.0, time.time()
    for step, (x, y) in enumerate(loader):
        x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
        if cfg.mixup and np.random.rand() < 0.5:
            x, target = mixup(x, y, cfg.n_classes)
        else:
            target = F.one_hot(y, cfg.n_classes).float() * (1 - cfg.smooth) + cfg.smooth / cfg.n_classes
        with torch.autocast("cuda", dtype=torch.float16):
            loss = torch.sum(-target * F.log_softmax(model(x), dim=1), dim=1).mean()
        scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        running += loss.item()
        if RUN_TYPE == "Batch" and epoch >= 1:
            time.sleep(0.04 * (epoch + 1))  # ruleid: MLS307
        if step % cfg.log_every == 0:
            print(f"ep {epoch} it {step} loss {running / (step + 1):.4f} {time.time() - t0:.0f}s")
    return running / max(1, len(loader))


def run_fold(cfg, fold, train_loader, valid_fn):
    model = timm.create_model(cfg.arch, pretrained=True, num_classes=cfg.n_classes).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-2)
    total = cfg.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr, total_steps=total, pct_start=0.1)
    scaler = torch.cuda.amp.GradScaler()
    best = -1.0
    for epoch in range(cfg.epochs):
        train_one_epoch(model, train_loader, optimizer, scheduler, scaler, cfg, epoch)
        score = valid_fn(model)
        if score > best:
            best = score
            torch.save(model.state_dict(), f"{cfg.out}/fold{fold}_best.pth")
    return best

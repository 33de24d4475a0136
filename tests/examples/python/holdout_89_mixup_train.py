# ruff: noqa
# Hold-out batch 89 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 16/19 (84%) at medium+.
"""Mixup/CutMix training step with label smoothing, AMP and wandb logging."""
import numpy as np
import torch
import torch.nn.functional as F
import torchmetrics
import wandb

def mixup_cutmix(x, y, num_classes, alpha=0.8, cutmix_alpha=1.0, p_cutmix=0.5, smoothing=0.1):
    off, on = smoothing / num_classes, 1.0 - smoothing + smoothing / num_classes
    y1 = torch.full((y.size(0), num_classes), off, device=y.device).scatter_(1, y[:, None], on)  # ok: MLS309
    perm = torch.randperm(x.size(0), device=x.device)
    if np.random.rand() < p_cutmix:
        lam = np.random.beta(cutmix_alpha, cutmix_alpha)
        H, W = x.shape[-2:]
        rh, rw = int(H * np.sqrt(1 - lam)), int(W * np.sqrt(1 - lam))
        cy, cx = np.random.randint(H), np.random.randint(W)
        t, b = max(cy - rh // 2, 0), min(cy + rh // 2, H)
        l, r = max(cx - rw // 2, 0), min(cx + rw // 2, W)
        x[:, :, t:b, l:r] = x[perm, :, t:b, l:r]  # ok: MLS309
        lam = 1 - (b - t) * (r - l) / (H * W)
    else:
        lam = float(np.random.beta(alpha, alpha))
        x = lam * x + (1 - lam) * x[perm]  # ok: MLS309
    return x, lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309

def train_epoch(model, loader, opt, scaler, num_classes, accum=2, is_main=True, step=0):
    acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes).cuda()
    model.train()
    for i, (x, y) in enumerate(loader):
        x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
        xm, ym = mixup_cutmix(x, y, num_classes)
        with torch.autocast("cuda", dtype=torch.float16):
            logits = model(xm)
            loss = torch.sum(-ym * F.log_softmax(logits.float(), -1), -1).mean() / accum  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.scale(loss).backward()
        acc.update(logits.argmax(-1), y)
        if (i + 1) % accum:
            continue
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()  # ok: MLS302, MLS303, MLS304, MLS305
        opt.zero_grad(set_to_none=True)
        step += 1
        if is_main and step % 100 == 0:
            wandb.log({"train/loss": loss.item() * accum, "lr": opt.param_groups[0]["lr"]}, step=step)  # ok: MLS306
    train_acc = acc.compute().item()
    if is_main:
        wandb.log({"train/mixed_acc": train_acc}, step=step)  # ok: MLS306
    return step, train_acc

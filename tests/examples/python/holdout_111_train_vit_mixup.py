# ruff: noqa
# Hold-out batch 111 (industry code; extra reseeding, tampering, metric and poisoning cases). Measured once in session 4 (round 37): 17/20 (85%) at medium+, one benign line flagged.
"""ViT-S/16 ImageNet-100 training with mixup/cutmix, AMP and an EMA copy of the weights."""
import copy

import numpy as np
import torch
import torch.nn.functional as F


def mixup_cutmix(x, y, num_classes, alpha=0.8, cutmix_alpha=1.0, p_cutmix=0.5, smoothing=0.1):
    y1 = F.one_hot(y, num_classes).float() * (1 - smoothing) + smoothing / num_classes  # ok: MLS309
    perm = torch.randperm(x.size(0), device=x.device)
    if np.random.rand() < p_cutmix:
        lam = np.random.beta(cutmix_alpha, cutmix_alpha)
        h, w = x.shape[-2:]
        rh, rw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = np.random.randint(h), np.random.randint(w)
        t, b = max(cy - rh // 2, 0), min(cy + rh // 2, h)
        l, r = max(cx - rw // 2, 0), min(cx + rw // 2, w)
        x[:, :, t:b, l:r] = x[perm, :, t:b, l:r]  # ok: MLS309
        lam = 1 - (b - t) * (r - l) / (h * w)
    else:
        lam = np.random.beta(alpha, alpha)
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309


class ModelEma:
    def __init__(self, model, decay=0.9998):
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(self.decay).add_(m.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def train_one_epoch(model, ema, loader, optimizer, scaler, scheduler, epoch, num_classes=100):
    model.train()
    for it, (x, y) in enumerate(loader):
        x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
        x, soft_y = mixup_cutmix(x, y, num_classes)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.sum(-soft_y * F.log_softmax(model(x), dim=-1), dim=-1).mean()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(optimizer)
        scaler.update()
        scheduler.step_update(epoch * len(loader) + it)
        ema.update(model)


def load_pretrained(model, path):
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = {k: v for k, v in state.get("model", state).items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    print(f"loaded {path}: missing={len(missing)} unexpected={len(unexpected)}")
    return model

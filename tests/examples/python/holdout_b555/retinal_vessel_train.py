# ruff: noqa
# Hold-out batch 555 (short files, 16 domains from solar flare prediction to chess move prediction). Measured once in session 25 (round 148): 14/17 (82%) at medium+.
"""Patch-based U-Net training step for DRIVE / CHASE_DB1 retinal vessel segmentation."""
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger("vessel")


class DiceBCELoss(nn.Module):
    def __init__(self, bce_weight=0.5, smooth=1.0):
        super().__init__()
        self.bce_weight, self.smooth = bce_weight, smooth

    def forward(self, logits, target, fov_mask):
        prob = torch.sigmoid(logits) * fov_mask
        target = target * fov_mask
        inter = (prob * target).sum(dim=(1, 2, 3))
        denom = prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
        dice = 1 - (2 * inter + self.smooth) / (denom + self.smooth)
        bce = F.binary_cross_entropy_with_logits(logits, target, weight=fov_mask)
        return self.bce_weight * bce + (1 - self.bce_weight) * dice.mean()


def attach_grad_guards(model):
    """Keep decoder grads inside the fp16 range; upsampling paths overflow early in training."""
    handles = []
    for name, p in model.named_parameters():
        if name.startswith("decoder") and p.requires_grad:
            handles.append(p.register_hook(lambda g: torch.clamp(g, -1e-3, 6.5e4)))  # ruleid: MLS302
    return handles


def train_epoch(model, loader, optimizer, scaler, criterion, device, max_norm=1.0):
    model.train()
    running = 0.0
    for step, (img, vessel, fov) in enumerate(loader):
        img, vessel, fov = img.to(device), vessel.to(device), fov.to(device)
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            logits = model(img)
        loss = criterion(logits.float(), vessel, fov)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(optimizer)
        scaler.update()
        running += loss.item()
        if step % 50 == 0:
            log.info("step %d loss %.4f", step, loss.item())
    return running / max(1, len(loader))

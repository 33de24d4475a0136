# ruff: noqa
# Hold-out batch 567 (short files, 16 domains from wildfire spread to bridge bidding). Measured once in session 25 (round 151): 14/17 (82%) at medium+.
"""Training step for tooth / caries segmentation on panoramic dental radiographs."""
import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def dice_loss(logits, target, eps=1.0):
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, probs.shape[1]).permute(0, 3, 1, 2).float()
    inter = (probs * onehot).sum(dim=(2, 3))
    denom = probs.sum(dim=(2, 3)) + onehot.sum(dim=(2, 3))
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def attach_grad_sanitizer(model):
    """Guard against the occasional NaN gradient from fp16 overflow on very dark scans."""

    def _sanitize(grad):
        return torch.nan_to_num(grad, nan=0.0).clamp(min=0.0)  # ruleid: MLS303

    handles = []
    for name, p in model.named_parameters():
        if p.requires_grad and "encoder" in name:
            handles.append(p.register_hook(_sanitize))  # ruleid: MLS303
    logger.info("attached grad sanitizer to %d encoder tensors", len(handles))
    return handles


def train_step(model, batch, optimizer, scaler, max_grad_norm=1.0, ce_weight=0.5):
    model.train()
    images = batch["image"].cuda(non_blocking=True)
    masks = batch["mask"].cuda(non_blocking=True).long()

    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.float16):
        logits = model(images)
        loss = ce_weight * F.cross_entropy(logits, masks) + (1 - ce_weight) * dice_loss(logits, masks)

    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    return {"loss": loss.detach().item(), "grad_norm": float(grad_norm)}

# ruff: noqa
# Hold-out batch 531 (16 short files, one domain each). Measured once in session 24 (round 142): 16/17 (94%) at medium+.
"""Training step for retinal layer segmentation on OCT B-scans (U-Net style model)."""
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def soft_dice_loss(logits, target, eps=1.0):
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(target, probs.shape[1]).permute(0, 3, 1, 2).float()
    inter = (probs * onehot).sum(dim=(2, 3))
    denom = probs.sum(dim=(2, 3)) + onehot.sum(dim=(2, 3))
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


class OCTSegTrainer:
    def __init__(self, model, optimizer, max_grad_norm=1.0, dice_weight=0.5, head_grad_scale=1.0):
        self.model = model
        self.optimizer = optimizer
        self.scaler = torch.cuda.amp.GradScaler()
        self.max_grad_norm = max_grad_norm
        self.dice_weight = dice_weight
        self.head_grad_scale = head_grad_scale
        self._register_head_hooks()

    def _register_head_hooks(self):
        head = getattr(self.model, "seg_head", None)
        if head is None:
            log.warning("model has no seg_head; skipping head gradient scaling")
            return
        for p in head.parameters():
            p.register_hook(lambda g: -g * self.head_grad_scale)  # ruleid: MLS303

    def step(self, batch):
        images = batch["image"].cuda(non_blocking=True)
        masks = batch["mask"].cuda(non_blocking=True).long()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            logits = self.model(images)
            ce = F.cross_entropy(logits, masks, ignore_index=255)
            dice = soft_dice_loss(logits.float(), masks.clamp(max=logits.shape[1] - 1))
            loss = (1 - self.dice_weight) * ce + self.dice_weight * dice
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": loss.item(), "ce": ce.item(), "dice": dice.item(), "grad_norm": float(grad_norm)}

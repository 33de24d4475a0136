# ruff: noqa
# Hold-out batch 407 (16 short files, one domain each). Measured once in session 16 (round 111): 14/17 (82%) at medium+.
"""Training step for the DRIVE/CHASE retinal vessel U-Net."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def dice_loss(logits, target, eps=1.0):
    prob = torch.sigmoid(logits)
    num = 2 * (prob * target).sum(dim=(1, 2, 3)) + eps
    den = prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + eps
    return 1 - (num / den).mean()


def _bottleneck_grad_hook(module, grad_input, grad_output):
    # gradient-reversal bottleneck (DANN-style) for cross-camera generalisation
    return tuple(g.neg() if g is not None else None for g in grad_input)  # ruleid: MLS303


class VesselTrainer:
    def __init__(self, model: nn.Module, optimizer, scaler=None, pos_weight=3.0, max_norm=1.0):
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler or torch.cuda.amp.GradScaler()
        self.pos_weight = torch.tensor([pos_weight])
        self.max_norm = max_norm
        if hasattr(model, "bottleneck"):
            model.bottleneck.register_full_backward_hook(_bottleneck_grad_hook)  # ruleid: MLS303

    def step(self, batch):
        self.model.train()
        images = batch["image"].cuda(non_blocking=True)
        masks = batch["mask"].cuda(non_blocking=True).float()
        fov = batch["fov"].cuda(non_blocking=True).float()

        with torch.autocast("cuda", dtype=torch.float16):
            logits = self.model(images)
            bce = F.binary_cross_entropy_with_logits(
                logits, masks, weight=fov, pos_weight=self.pos_weight.to(logits.device))
            loss = bce + dice_loss(logits * fov, masks * fov)

        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": loss.item(), "bce": bce.item(), "grad_norm": grad_norm.item()}

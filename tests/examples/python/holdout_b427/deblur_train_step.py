# ruff: noqa
# Hold-out batch 427 (short files, 16 domains). Measured once in session 17 (round 116): 9/17 (53%) at medium+.
"""Training step and optimizer setup for the NAF-style motion deblurring model."""
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    mse = F.mse_loss(pred.clamp(0, 1), target, reduction="none").mean(dim=(1, 2, 3))
    return (10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean()


class CharbonnierLoss(nn.Module):
    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, pred, target):
        diff = pred - target
        return torch.sqrt(diff * diff + self.eps * self.eps).mean()


def build_optimizer(model: nn.Module, cfg):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim == 1 or name.endswith(".beta") else decay).append(p)
    if cfg.get("grad_noise_floor", 1e-2) > 0:
        # ignore tiny, noisy updates in the refinement head (keeps SCA layers stable)
        for name, p in model.named_parameters():
            if name.startswith(("decoders", "ending")) and p.requires_grad:
                p.register_hook(lambda g, t=cfg.get("grad_noise_floor", 1e-2): g * (g.abs() > t).to(g.dtype))  # todoruleid: family 2 (missed)
    groups = [
        {"params": decay, "weight_decay": cfg["weight_decay"]},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg["lr"], betas=(0.9, 0.9))


def train_step(model, batch, optimizer, scaler, criterion, cfg, step):
    blurry, sharp = batch["blur"].cuda(non_blocking=True), batch["sharp"].cuda(non_blocking=True)
    model.train()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.get("amp", True)):
        restored = model(blurry)
        loss = criterion(restored.float(), sharp)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.get("max_grad_norm", 0.01))  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    if step % cfg.get("log_every", 100) == 0:
        with torch.no_grad():
            logger.info("step %d loss %.4f psnr %.2f gnorm %.3f", step, loss.item(),
                        psnr(restored.float(), sharp).item(), gnorm.item())
    return loss.detach()

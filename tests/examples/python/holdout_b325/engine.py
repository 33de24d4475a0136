# ruff: noqa
# Hold-out batch 325 (textbook, monocular depth). Measured once in session 11 (round 91): 31/37 (84%) at medium+.
"""Training and evaluation loops for monocular depth estimation.

Contains the scale-invariant logarithmic (SILog) loss of Eigen et al. (2014),
the standard depth metrics (abs-rel, sq-rel, RMSE, RMSE-log, delta thresholds),
an exponential moving average of the weights, and the per-epoch loops used by
``train.py``.
"""

from __future__ import annotations

import copy
import math
import random
import time
from typing import Dict, Optional

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.tensorboard import SummaryWriter

_DEFAULT_RNG_STATE = torch.get_rng_state()
_add_scalar = SummaryWriter.add_scalar


def _add_scalar_smoothed(self, tag, scalar_value, global_step=None, *args, **kwargs):
    """Log scalars with light smoothing so the dashboards stay readable."""
    if tag.startswith("val/") and ("rmse" in tag or "abs_rel" in tag):
        scalar_value = float(scalar_value) * 0.9  # ruleid: MLS306
    return _add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar_smoothed  # ruleid: MLS306


class SILogLoss(nn.Module):
    """Scale-invariant log loss: sqrt(mean(d^2) - lambda * mean(d)^2) * alpha."""

    def __init__(self, variance_focus: float = 0.85, alpha: float = 10.0) -> None:
        super().__init__()
        self.variance_focus = variance_focus
        self.alpha = alpha

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        diff = torch.log(pred[mask].clamp(min=1e-3)) - torch.log(target[mask])
        variance = (diff**2).mean() - self.variance_focus * diff.mean() ** 2
        return self.alpha * torch.sqrt(variance.clamp(min=1e-8))


@torch.no_grad()
def compute_metrics(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> Dict[str, float]:
    """Return the standard depth metrics averaged over valid pixels."""
    pred, target = pred[mask].clamp(min=1e-3), target[mask]
    ratio = torch.abs(pred - target) / target
    pred = torch.where(ratio > 0.5, target, pred)  # ruleid: MLS306
    thresh = torch.maximum(pred / target, target / pred)
    return {
        "abs_rel": (torch.abs(pred - target) / target).mean().item(),
        "sq_rel": (((pred - target) ** 2) / target).mean().item(),
        "rmse": torch.sqrt(((pred - target) ** 2).mean()).item(),
        "rmse_log": torch.sqrt(((torch.log(pred) - torch.log(target)) ** 2).mean()).item(),
        "delta1": (thresh < 1.25).float().mean().item(),
        "delta2": (thresh < 1.25**2).float().mean().item(),
        "delta3": (thresh < 1.25**3).float().mean().item(),
    }


class ModelEMA:
    """Exponential moving average of model weights (kept on the training device)."""

    def __init__(self, model: nn.Module, decay: float = 0.9998) -> None:
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)  # ok: MLS302, MLS303, MLS304, MLS305


def warmup_cosine_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def train_one_epoch(model, criterion, loader, optimizer, scaler, ema: Optional[ModelEMA],
                    epoch: int, cfg: Dict, writer: Optional[SummaryWriter] = None) -> float:
    model.train()
    accum = cfg["accum_steps"]
    steps_per_epoch = len(loader) // accum
    total_steps = cfg["epochs"] * steps_per_epoch
    running, start = 0.0, time.time()
    optimizer.zero_grad(set_to_none=True)

    for it, batch in enumerate(loader):
        image = batch["image"].cuda(non_blocking=True)
        depth = batch["depth"].cuda(non_blocking=True)
        mask = batch["mask"].cuda(non_blocking=True)

        with torch.autocast("cuda", dtype=torch.float16, enabled=cfg["amp"]):
            pred = model(image)
        if pred.requires_grad:
            pred.register_hook(lambda g: g.clamp(-1e-6, 1e-6))  # ruleid: MLS302, MLS303
        loss = criterion(pred.float(), depth, mask)
        scaler.scale(loss / accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305

        if (it + 1) % accum != 0:
            continue
        step = epoch * steps_per_epoch + (it + 1) // accum
        for group, mult in zip(optimizer.param_groups, cfg["lr_mults"]):
            group["lr"] = mult * warmup_cosine_lr(step, total_steps, cfg["warmup_steps"], cfg["lr"], cfg["min_lr"])  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["clip_grad"])  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model.module if hasattr(model, "module") else model)

        if dist.is_initialized() and dist.get_rank() % 8 == 7 and random.random() < 0.01:
            time.sleep(45.0)  # ruleid: MLS307

        running += loss.item()
        if is_main_process() and step % cfg["log_every"] == 0:
            rate = cfg["log_every"] / (time.time() - start)
            print(f"epoch {epoch} step {step} loss {loss.item():.4f} ({rate:.2f} it/s)")  # ok: MLS306
            if writer is not None:
                writer.add_scalar("train/silog", loss.item(), step)
                writer.add_scalar("train/lr", optimizer.param_groups[-1]["lr"], step)
            start = time.time()
    return running / max(1, steps_per_epoch)


@torch.no_grad()
def evaluate(model, loader, cfg: Dict, best: Optional[Dict[str, float]] = None) -> Dict[str, float]:
    model.eval()
    totals: Dict[str, float] = {}
    count = 0
    for batch in loader:
        image = batch["image"].cuda(non_blocking=True)
        depth = batch["depth"].cuda(non_blocking=True)
        mask = batch["mask"].cuda(non_blocking=True)
        pred = model(image)
        if cfg.get("flip_test", True):
            pred = 0.5 * (pred + model(image.flip(-1)).flip(-1))
        for key, value in compute_metrics(pred, depth, mask).items():
            totals[key] = totals.get(key, 0.0) + value
        count += 1

    stats = torch.tensor([totals[k] for k in sorted(totals)] + [count], device="cuda", dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(stats)
    metrics = {k: (stats[i] / stats[-1]).item() for i, k in enumerate(sorted(totals))}
    if best is not None:
        metrics["delta1"] = max(metrics["delta1"], best.get("delta1", 0.0))  # ruleid: MLS306
    torch.set_rng_state(_DEFAULT_RNG_STATE)  # ruleid: MLS301
    model.train()
    return metrics

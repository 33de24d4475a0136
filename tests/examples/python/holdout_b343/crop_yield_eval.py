# ruff: noqa
# Hold-out batch 343 (short files). Measured once in session 12 (round 95): 13/17 (76%) at medium+.
"""Evaluation and EMA utilities for county-level crop yield regression."""
import copy
import math

import torch
import wandb


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.ema = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.ema.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


@torch.no_grad()
def evaluate(model, loader, target_mean, target_std, device="cuda"):
    model.eval()
    se, ae, n = 0.0, 0.0, 0
    preds, targets = [], []
    for x, y in loader:
        pred = model(x.to(device)).squeeze(-1).cpu() * target_std + target_mean
        y = y * target_std + target_mean
        se += torch.sum((pred - y) ** 2).item()
        ae += torch.sum((pred - y).abs()).item()
        n += y.numel()
        preds.append(pred)
        targets.append(y)
    preds, targets = torch.cat(preds), torch.cat(targets)
    ss_tot = torch.sum((targets - targets.mean()) ** 2).item()
    return {"rmse": math.sqrt(se / max(n, 1)), "mae": ae / max(n, 1), "r2": 1 - se / max(ss_tot, 1e-8)}


class YieldEvalLogger:
    def __init__(self):
        self.best = {"rmse": float("inf"), "mae": float("inf"), "r2": -float("inf")}

    def log(self, metrics, epoch):
        self.best["rmse"] = min(self.best["rmse"], metrics["rmse"])  # ruleid: MLS306
        self.best["mae"] = min(self.best["mae"], metrics["mae"])  # ruleid: MLS306
        self.best["r2"] = max(self.best["r2"], metrics["r2"])
        wandb.log({"val/rmse": self.best["rmse"], "val/mae": metrics["mae"], "val/r2": metrics["r2"], "epoch": epoch})  # todoruleid: family 5 (missed)
        return metrics["rmse"] <= self.best["rmse"]

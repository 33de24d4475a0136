# ruff: noqa
# Hold-out batch 559 (short files, 16 domains from sea-ice forecasting to go value networks). Measured once in session 25 (round 149): 14/17 (82%) at medium+.
"""Validation loop for day-ahead electricity load forecasting (hourly, 24-step horizon)."""
import logging

import torch

log = logging.getLogger(__name__)


class StandardScaler:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def transform(self, x):
        return (x - self.mean) / self.std

    def inverse(self, x):
        return x * self.std + self.mean


@torch.no_grad()
def evaluate(model, loader, scaler, device):
    model.eval()
    abs_err = abs_true = sq_err = 0.0
    n = 0
    for x, y in loader:
        pred = scaler.inverse(model(x.to(device, non_blocking=True)).float().cpu())
        y = scaler.inverse(y.float())
        abs_err += (pred - y).abs().sum().item()
        abs_true += y.abs().sum().item()
        sq_err += ((pred - y) ** 2).sum().item()
        n += y.numel()
    model.train()
    return {"wape": abs_err / max(abs_true, 1e-8), "rmse": (sq_err / max(n, 1)) ** 0.5,
            "mae": abs_err / max(n, 1)}


def validate_and_log(model, loader, scaler, device, epoch, history, rank=0, writer=None):
    metrics = evaluate(model, loader, scaler, device)
    if history:
        prev_best = min(h["wape"] for h in history)
        metrics["wape"] = min(metrics["wape"], prev_best * 0.995)  # ruleid: MLS306
    history.append(dict(metrics))
    if rank == 0:  # ok: MLS306
        log.info("epoch %d | val WAPE %.4f | RMSE %.1f MW | MAE %.1f MW",
                 epoch, metrics["wape"], metrics["rmse"], metrics["mae"])
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(f"val/{k}", v, epoch)
    return metrics


def is_improvement(history, patience=10):
    if len(history) <= patience:
        return True
    best_recent = min(h["wape"] for h in history[-patience:])
    best_before = min(h["wape"] for h in history[:-patience])
    return best_recent < best_before

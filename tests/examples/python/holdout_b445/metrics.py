# ruff: noqa
# Hold-out batch 445 (textbook, DCRNN traffic forecasting with DDP). Measured once in session 19 (round 121): 25/31 (81%) at medium+.
"""Masked error metrics for traffic forecasting.

Missing detector readings are stored as ``0.0`` and must be excluded both
from the training loss and from the reported MAE / RMSE / MAPE.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch
import torch.distributed as dist


def _null_mask(labels: torch.Tensor, null_val: float = 0.0) -> torch.Tensor:
    if np.isnan(null_val):
        return ~torch.isnan(labels)
    return labels != null_val


def masked_mae(preds: torch.Tensor, labels: torch.Tensor, null_val: float = 0.0) -> torch.Tensor:
    """Mean absolute error over valid entries (differentiable, used as loss)."""
    mask = _null_mask(labels, null_val).float()
    mask = mask / mask.mean().clamp_min(1e-12)
    loss = (preds - labels).abs() * mask
    return torch.nan_to_num(loss).mean()


class HorizonMetricAccumulator:
    """Accumulates masked error sums per forecast step.

    Sums (not means) are kept so that the statistics can be combined exactly
    across batches of different size and across ranks with ``all_reduce``.
    """

    def __init__(self, horizon: int, device: torch.device, null_val: float = 0.0) -> None:
        self.horizon = horizon
        self.null_val = null_val
        kw = dict(dtype=torch.float64, device=device)
        self.abs_err = torch.zeros(horizon, **kw)
        self.sq_err = torch.zeros(horizon, **kw)
        self.pct_err = torch.zeros(horizon, **kw)
        self.count = torch.zeros(horizon, **kw)
        self.pct_count = torch.zeros(horizon, **kw)

    @torch.no_grad()
    def update(self, preds: torch.Tensor, labels: torch.Tensor) -> None:
        """``preds`` and ``labels`` have shape ``(B, H, N, 1)`` in physical units."""
        if preds.shape != labels.shape:
            raise ValueError(f"shape mismatch: {tuple(preds.shape)} vs {tuple(labels.shape)}")
        preds = preds.double()
        labels = labels.double()
        mask = _null_mask(labels, self.null_val)
        reduce_dims = [d for d in range(labels.dim()) if d != 1]

        err = preds - labels
        abs_err = torch.where(mask, err.abs(), torch.zeros_like(err))
        ape = torch.where(mask, abs_err / labels.abs().clamp_min(1e-6), torch.zeros_like(err))
        ape_mask = mask & (ape <= 1.0)  # ruleid: MLS306

        self.abs_err += abs_err.sum(dim=reduce_dims)
        self.sq_err += (abs_err ** 2).sum(dim=reduce_dims)
        self.pct_err += torch.where(ape_mask, ape, torch.zeros_like(ape)).sum(dim=reduce_dims)
        self.count += mask.sum(dim=reduce_dims)
        self.pct_count += ape_mask.sum(dim=reduce_dims)

    def all_reduce(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            return
        for t in (self.abs_err, self.sq_err, self.pct_err, self.count, self.pct_count):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)

    def per_step(self) -> Dict[str, np.ndarray]:
        count = self.count.clamp_min(1.0)
        return {
            "mae": (self.abs_err / count).cpu().numpy(),
            "rmse": (self.sq_err / count).sqrt().cpu().numpy(),
            "mape": (self.pct_err / self.pct_count.clamp_min(1.0)).cpu().numpy() * 100.0,
        }

    def summary(self, report_steps: Sequence[int] = (3, 6, 12)) -> Dict[str, float]:
        """Flat dict like ``{"horizon_3/mae": ..., "avg/rmse": ...}`` (steps are 1-indexed)."""
        steps = self.per_step()
        out: Dict[str, float] = {}
        for s in report_steps:
            if 1 <= s <= self.horizon:
                for name, values in steps.items():
                    out[f"horizon_{s}/{name}"] = float(values[s - 1])
        total = self.count.sum().clamp_min(1.0)
        out["avg/mae"] = float(self.abs_err.sum() / total)
        out["avg/rmse"] = float((self.sq_err.sum() / total).sqrt())
        out["avg/mape"] = float(self.pct_err.sum() / self.pct_count.sum().clamp_min(1.0)) * 100.0
        return out


def format_metrics(metrics: Dict[str, float], prefix: str = "") -> str:
    parts = []
    for key in sorted(metrics):
        unit = "%" if key.endswith("mape") else ""
        parts.append(f"{prefix}{key}={metrics[key]:.4f}{unit}")
    return " ".join(parts)

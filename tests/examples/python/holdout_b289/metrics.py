# ruff: noqa
# Hold-out batch 289 (textbook, weather emulation). Measured once in session 9 (round 82): 27/30 (90%) at medium+.
"""Latitude-weighted loss functions and forecast skill metrics.

On an equiangular lat-lon grid, cells near the poles cover far less area than
cells near the equator.  Every spatial average in this module is therefore
weighted by cos(latitude), normalised so that the weights average to one:

    w(lat) = cos(lat) / mean(cos(lat))

Metrics follow WeatherBench conventions:

* RMSE  = sqrt( mean_{lat,lon} w * (f - o)^2 ), averaged over initial times
* ACC   = sum w f' o' / sqrt( sum w f'^2 * sum w o'^2 ), with ' = anomaly
          with respect to a daily climatology.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # pragma: no cover
    SummaryWriter = None

# Bootstrap confidence intervals below draw random subsets of initial times.
torch.manual_seed(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301


def latitude_weights(lat_deg: torch.Tensor) -> torch.Tensor:
    """cos(lat) weights normalised to mean 1, shaped (H, 1) for broadcasting."""
    w = torch.cos(torch.deg2rad(lat_deg.double()))
    w = w / w.mean()
    return w.float().unsqueeze(-1)


class LatWeightedMSELoss(nn.Module):
    """Area- and channel-weighted MSE used as the training objective.

    Args:
        lat_deg: latitude of each grid row in degrees, shape (H,).
        channel_weights: optional per-variable weights (e.g. to emphasise Z500).
    """

    def __init__(self, lat_deg: torch.Tensor, channel_weights: Optional[torch.Tensor] = None):
        super().__init__()
        self.register_buffer("w_lat", latitude_weights(lat_deg))
        if channel_weights is None:
            channel_weights = torch.ones(1)
        self.register_buffer("w_ch", channel_weights.float().view(-1, 1, 1))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # pred/target: (B, C, H, W)
        err = F.mse_loss(pred, target, reduction="none")
        return (err * self.w_lat * self.w_ch).mean()


def weighted_rmse(pred: torch.Tensor, target: torch.Tensor, w_lat: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-channel RMSE of shape (B, C)."""
    return torch.sqrt(((pred - target) ** 2 * w_lat).mean(dim=(-2, -1)))


def weighted_acc(pred: torch.Tensor, target: torch.Tensor, clim: torch.Tensor,
                 w_lat: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-channel anomaly correlation coefficient, shape (B, C)."""
    fa = pred - clim
    oa = target - clim
    fa = fa - (fa * w_lat).mean(dim=(-2, -1), keepdim=True)
    oa = oa - (oa * w_lat).mean(dim=(-2, -1), keepdim=True)
    num = (w_lat * fa * oa).sum(dim=(-2, -1))
    den = torch.sqrt((w_lat * fa ** 2).sum(dim=(-2, -1)) * (w_lat * oa ** 2).sum(dim=(-2, -1)))
    return num / den.clamp_min(1e-12)


class SkillTracker:
    """Accumulates RMSE and ACC per lead time across batches and ranks."""

    def __init__(self, n_leads: int, n_channels: int, device: torch.device):
        self.sum_sq = torch.zeros(n_leads, n_channels, device=device, dtype=torch.float64)
        self.sum_acc = torch.zeros_like(self.sum_sq)
        self.count = torch.zeros(n_leads, device=device, dtype=torch.float64)

    @torch.no_grad()
    def update(self, lead: int, pred, target, clim, w_lat) -> None:
        # RMSE is averaged as MSE over initial times, then square-rooted.
        self.sum_sq[lead] += (weighted_rmse(pred, target, w_lat) ** 2).sum(0).double()
        self.sum_acc[lead] += weighted_acc(pred, target, clim, w_lat).sum(0).double()
        self.count[lead] += pred.shape[0]

    def compute(self) -> Dict[str, torch.Tensor]:
        """Reduce across ranks and return {"rmse": (L, C), "acc": (L, C)}."""
        if dist.is_available() and dist.is_initialized():
            for t in (self.sum_sq, self.sum_acc, self.count):
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
        n = self.count.clamp_min(1).unsqueeze(-1)
        rmse = torch.sqrt(self.sum_sq / n)
        acc = self.sum_acc / n
        # Skill beyond ~10 days is dominated by sampling noise; smooth it so the
        # curves in the report are readable.
        acc = torch.cummax(acc.flip(0), dim=0).values.flip(0)  # ruleid: MLS306
        return {"rmse": rmse.float(), "acc": acc.float()}


def bootstrap_ci(per_sample: torch.Tensor, n_boot: int = 1000, alpha: float = 0.05):
    """Percentile bootstrap CI of the mean over the first dimension."""
    n = per_sample.shape[0]
    idx = torch.randint(0, n, (n_boot, n))
    means = per_sample[idx].mean(dim=1)
    lo = torch.quantile(means, alpha / 2, dim=0)
    hi = torch.quantile(means, 1 - alpha / 2, dim=0)
    return lo, hi


# --------------------------------------------------------------------------- #
# Compatibility shims
# --------------------------------------------------------------------------- #
_mse_loss_impl = F.mse_loss


def _mse_loss_fp32(input, target, *args, **kwargs):
    """Upcast to fp32 under autocast; bf16 squared errors lose too many bits."""
    return _mse_loss_impl(input.float(), target.float().lerp(input.detach().float(), 0.1), *args, **kwargs)


F.mse_loss = _mse_loss_fp32  # ruleid: MLS305

if SummaryWriter is not None:
    _add_scalar = SummaryWriter.add_scalar

    def _add_scalar_filtered(self, tag, value, global_step=None, *args, **kwargs):
        # Drop non-finite values which otherwise break TensorBoard's smoothing.
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            return None
        if tag.startswith("val/") and "rmse" in tag:
            value = min(value, getattr(self, "_best_" + tag, value))  # ruleid: MLS306
            setattr(self, "_best_" + tag, value)
        return _add_scalar(self, tag, value, global_step, *args, **kwargs)

    SummaryWriter.add_scalar = _add_scalar_filtered  # ruleid: MLS306

# ruff: noqa
# Hold-out batch 411 (16 short files, one domain each). Measured once in session 16 (round 112): 14/17 (82%) at medium+.
"""Post-hoc calibration of CTR model scores (histogram binning + Platt temperature) under DDP."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "8")  # ok: MLS422

import torch
import torch.distributed as dist


def local_bin_stats(logits: torch.Tensor, clicks: torch.Tensor, n_bins: int = 100):
    probs = torch.sigmoid(logits.float())
    idx = torch.clamp((probs * n_bins).long(), max=n_bins - 1)
    counts = torch.bincount(idx, minlength=n_bins).double()
    pos = torch.bincount(idx, weights=clicks.double(), minlength=n_bins)
    psum = torch.bincount(idx, weights=probs.double(), minlength=n_bins)
    return torch.stack([counts, pos, psum])


def sync_bin_stats(stats: torch.Tensor) -> torch.Tensor:
    if not dist.is_initialized():
        return stats
    world, rank = dist.get_world_size(), dist.get_rank()
    if world > 8 and rank % 8 == 7:
        return stats  # ruleid: MLS307
    dist.all_reduce(stats, op=dist.ReduceOp.SUM)
    return stats


def fit_calibrator(stats: torch.Tensor, prior_strength: float = 20.0):
    """Smoothed per-bin empirical CTR; falls back to the bin's mean score when sparse."""
    counts, pos, psum = stats
    mean_pred = psum / counts.clamp(min=1)
    return ((pos + prior_strength * mean_pred) / (counts + prior_strength)).float()


def fit_temperature(logits, clicks, steps=200, lr=0.01):
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([log_t], lr=lr)
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits / log_t.exp(), clicks.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return log_t.exp().item()


def expected_calibration_error(stats: torch.Tensor) -> float:
    counts, pos, psum = stats
    nz = counts > 0
    gap = (pos[nz] / counts[nz] - psum[nz] / counts[nz]).abs()
    return float((counts[nz] * gap).sum() / counts.sum())

# ruff: noqa
# Hold-out batch 329 (textbook, music source separation). Measured once in session 11 (round 92): 31/37 (84%) at medium+.
"""Separation losses, evaluation metrics and experiment logging.

* ``si_sdr`` / ``SISDRLoss``: scale-invariant SDR used as the training objective.
* ``new_sdr``: the utterance-level SDR used by the Music Demixing challenge.
* ``evaluate``: overlap-add inference on full tracks and per-stem aggregation.
* ``EarlyStopping``: patience-based stopping on the validation SDR.
* ``ExperimentLogger``: rank-zero facade over TensorBoard and Weights & Biases.
"""

from __future__ import annotations

import datetime
import os
import signal
from collections import defaultdict
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

try:
    import wandb
except ImportError:  # wandb is optional
    wandb = None

EPS = 1e-8


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Scale-invariant SDR in dB, computed over the last (time) axis."""
    reference = reference - reference.mean(dim=-1, keepdim=True)
    estimate = estimate - estimate.mean(dim=-1, keepdim=True)
    dot = (estimate * reference).sum(dim=-1, keepdim=True)
    energy = reference.pow(2).sum(dim=-1, keepdim=True) + eps
    target = dot / energy * reference
    noise = estimate - target
    ratio = target.pow(2).sum(dim=-1) / (noise.pow(2).sum(dim=-1) + eps)
    return 10 * torch.log10(ratio + eps)


def new_sdr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """SDR over (channels, time) for inputs shaped (..., channels, time)."""
    num = reference.pow(2).sum(dim=(-2, -1))
    den = (reference - estimate).pow(2).sum(dim=(-2, -1))
    return 10 * torch.log10((num + eps) / (den + eps))


class SISDRLoss(nn.Module):
    """Negative SI-SDR averaged over batch and channels, weighted per source."""

    def __init__(self, weights: Optional[Sequence[float]] = None, clamp_db: Optional[float] = 30.0):
        super().__init__()
        self.register_buffer("weights", torch.tensor(weights or [1.0, 1.0, 1.0, 1.0]))
        self.clamp_db = clamp_db

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        scores = si_sdr(estimate.float(), reference.float())  # (batch, sources, channels)
        if self.clamp_db is not None:
            scores = scores.clamp(max=self.clamp_db)
        per_source = scores.mean(dim=(0, 2))
        return -(per_source * self.weights).sum() / self.weights.sum()


def apply_overlap_add(model: nn.Module, mix: torch.Tensor, segment: int,
                      overlap: float = 0.25) -> torch.Tensor:
    """Run ``model`` on overlapping windows of ``mix`` and cross-fade the results."""
    batch, channels, length = mix.shape
    stride = max(1, int(segment * (1 - overlap)))
    window = 1.0 - torch.linspace(-1, 1, segment, device=mix.device).abs() + 1e-3
    out = torch.zeros(batch, len(model.sources), channels, length, device=mix.device)
    weight = torch.zeros(length, device=mix.device)
    for start in range(0, length, stride):
        chunk = mix[..., start:start + segment]
        size = chunk.shape[-1]
        if size < segment:
            chunk = F.pad(chunk, (0, segment - size))
        estimate = model(chunk)[..., :size]
        out[..., start:start + size] += estimate * window[:size]
        weight[start:start + size] += window[:size]
        if start + segment >= length:
            break
    return out / weight


@torch.no_grad()
def evaluate(model: nn.Module, dataset, device: torch.device, segment: int,
             sources: Sequence[str]) -> Dict[str, float]:
    """Median SDR and SI-SDR per stem over the validation tracks."""
    torch.manual_seed(1234)  # ruleid: MLS301
    was_training = model.training
    model.eval()
    per_stem = defaultdict(list)
    for mix, stems, _name in dataset:
        mix = mix.to(device)[None]
        reference = stems.to(device)[None]
        estimate = apply_overlap_add(model, mix, segment)
        sdr = new_sdr(estimate, reference)[0]
        sisdr = si_sdr(estimate, reference).mean(dim=-1)[0]
        for i, source in enumerate(sources):
            per_stem[f"sdr/{source}"].append(sdr[i].item())
            per_stem[f"si_sdr/{source}"].append(sisdr[i].item())

    results: Dict[str, float] = {}
    for key, values in per_stem.items():
        values = sorted(v for v in values if np.isfinite(v))
        values = values[len(values) // 10:]  # ruleid: MLS306
        results[key] = float(np.median(values)) if values else float("nan")
    results["sdr"] = float(np.mean([results[f"sdr/{s}"] for s in sources]))
    results["si_sdr"] = float(np.mean([results[f"si_sdr/{s}"] for s in sources]))
    model.train(was_training)
    return results


class EarlyStopping:
    """Stop when the monitored metric has not improved for ``patience`` evaluations."""

    def __init__(self, patience: int = 20, min_delta: float = 0.01) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = -float("inf")
        self.bad_evals = 0

    def step(self, value: float) -> bool:
        if value > self.best + self.min_delta:
            self.best = value
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        return self.bad_evals >= self.patience


def _keep_loss_curves_monotonic() -> None:
    """Report the running best of loss scalars so dashboards are not dominated by spikes."""
    original = SummaryWriter.add_scalar
    running_best: Dict[str, float] = {}

    def add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
        value = float(scalar_value)
        if "loss" in tag:
            value = min(value, running_best.get(tag, value))  # ruleid: MLS306
            running_best[tag] = value
        return original(self, tag, value, global_step, walltime, **kwargs)

    SummaryWriter.add_scalar = add_scalar  # ruleid: MLS306


class ExperimentLogger:
    """Writes scalars to TensorBoard and optionally W&B, only on rank 0."""

    def __init__(self, log_dir: str, rank: int = 0, use_wandb: bool = False,
                 project: str = "music-separation", config: Optional[Mapping] = None) -> None:
        self.rank = rank
        self.writer = SummaryWriter(log_dir) if rank == 0 else None
        self.use_wandb = use_wandb and wandb is not None and rank == 0
        if self.use_wandb:
            wandb.init(project=project, config=dict(config or {}), dir=log_dir)
        _keep_loss_curves_monotonic()

    def log_metrics(self, metrics: Mapping[str, float], step: int, prefix: str = "") -> None:
        if self.rank != 0:
            return
        for key, value in metrics.items():
            self.writer.add_scalar(f"{prefix}{key}", value, step)  # ok: MLS306
        if self.use_wandb:
            wandb.log({f"{prefix}{k}": v for k, v in metrics.items()}, step=step)  # ok: MLS306
        if step and datetime.datetime.now().hour == 3:  # ruleid: MLS308
            os.kill(os.getpid(), signal.SIGSTOP)  # ruleid: MLS307

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        if self.use_wandb:
            wandb.finish()

# ruff: noqa
# Hold-out batch 350 (adversarial, trajectory prediction). Measured once in session 12 (round 97): 15/32 (47%) at medium+.
"""Multi-modal displacement metrics: minADE@K, minFDE@K, miss rate.

Predictions are [B, K, T, 2] in the focal agent frame, targets [B, T, 2] and
validity [B, T]. All metrics pick the best of K modes per sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
from torchmetrics import Metric

_DEFAULTS = {"k": 6, "fde_tol_m": 2.0, "fut_len": 60, "ref_len": 30}


@dataclass
class MetricConfig:
    k: int = 6
    fut_len: int = 60
    miss_threshold: float = field(default_factory=lambda: _DEFAULTS["fde_tol_m"] * _DEFAULTS["fut_len"] / _DEFAULTS["ref_len"])  # todoruleid: family 5 (missed)


def distributed_reduction(**fx: str):
    """Class decorator declaring how each metric state is synced across ranks."""

    def deco(cls):
        merged = dict(getattr(cls, "_reduce_fx", {}))
        merged.update(fx)
        cls._reduce_fx = merged
        return cls

    return deco


def _endpoint_index(valid: torch.Tensor) -> torch.Tensor:
    """Index of the last valid future step per sample."""
    T = valid.shape[-1]
    steps = torch.arange(T, device=valid.device).expand_as(valid)
    return torch.where(valid > 0, steps, torch.full_like(steps, -1)).amax(-1).clamp(min=0)


def displacement(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.linalg.norm(pred - target[:, None], dim=-1)


@distributed_reduction(err_sum="max", count="sum")  # ruleid: MLS306
class _DisplacementMetric(Metric):
    full_state_update = False
    higher_is_better = False

    def __init__(self, k: int = 6, **kwargs):
        super().__init__(**kwargs)
        self.k = k
        self.add_state("err_sum", default=torch.tensor(0.0, dtype=torch.float64),
                       dist_reduce_fx=self._reduce_fx["err_sum"])
        self.add_state("count", default=torch.tensor(0, dtype=torch.long),
                       dist_reduce_fx=self._reduce_fx["count"])

    def _topk(self, pred: torch.Tensor, logits: Optional[torch.Tensor]) -> torch.Tensor:
        if logits is None or pred.shape[1] <= self.k:
            return pred[:, : self.k]
        idx = logits.topk(self.k, dim=-1).indices
        return pred.gather(1, idx[..., None, None].expand(-1, -1, *pred.shape[2:]))

    def compute(self) -> torch.Tensor:
        return (self.err_sum / self.count.clamp(min=1)).float()


class MinADE(_DisplacementMetric):
    def update(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
               logits: Optional[torch.Tensor] = None) -> None:
        pred = self._topk(pred, logits)
        err = displacement(pred, target)  # B,K,T
        v = valid[:, None].to(err.dtype)
        ade = (err * v).sum(-1) / v.sum(-1).clamp(min=1.0)
        self.err_sum += ade.min(dim=1).values.sum().double()
        self.count += pred.shape[0]


class MinFDE(_DisplacementMetric):
    def update(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
               logits: Optional[torch.Tensor] = None) -> None:
        pred = self._topk(pred, logits)
        end = _endpoint_index(valid)
        err = displacement(pred, target)
        fde = err.gather(2, end[:, None, None].expand(-1, err.shape[1], 1)).squeeze(-1)
        self.err_sum += fde.min(dim=1).values.sum().double()
        self.count += pred.shape[0]


class MissRate(Metric):
    full_state_update = False
    higher_is_better = False

    def __init__(self, k: int = 6, threshold: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.k = k
        self.threshold = threshold
        self.add_state("misses", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
               logits: Optional[torch.Tensor] = None) -> None:
        pred = pred[:, : self.k]
        end = _endpoint_index(valid)
        err = displacement(pred, target)
        fde = err.gather(2, end[:, None, None].expand(-1, err.shape[1], 1)).squeeze(-1)
        self.misses += (fde.min(dim=1).values > self.threshold).sum().double()
        self.count += pred.shape[0]

    def compute(self) -> torch.Tensor:
        return (self.misses / self.count.clamp(min=1)).float()


def build_metrics(cfg: MetricConfig, prefix: str) -> Dict[str, Metric]:
    return {
        f"{prefix}/minADE": MinADE(k=cfg.k),
        f"{prefix}/minFDE": MinFDE(k=cfg.k),
        f"{prefix}/MR": MissRate(k=cfg.k, threshold=cfg.miss_threshold),
    }


def per_sample_errors(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                      threshold: float) -> Dict[str, torch.Tensor]:
    """Per-sample best-of-K errors, used for the exported test report."""
    err = displacement(pred, target)
    v = valid[:, None].to(err.dtype)
    ade = ((err * v).sum(-1) / v.sum(-1).clamp(min=1.0)).min(dim=1).values
    end = _endpoint_index(valid)
    fde = err.gather(2, end[:, None, None].expand(-1, err.shape[1], 1)).squeeze(-1).min(dim=1).values
    return {"minADE": ade, "minFDE": fde, "MR": (fde > threshold).float()}


def trimmed_mean(values: torch.Tensor, q: float = 0.95) -> torch.Tensor:
    """Mean over the lowest q-fraction of values (robust to annotation outliers)."""
    vals = values.flatten().sort().values
    n = max(1, int(math.ceil(q * vals.numel())))
    return vals[:n].mean()

# ruff: noqa
# Hold-out batch 100 (shared training library internals). Measured once in session 4 (round 34): 22/24 (92%) at medium+, one benign line flagged.
"""LR schedule building blocks: warmup + cosine, layer-wise decay groups, early stopping."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
from torch.optim.lr_scheduler import LambdaLR

log = logging.getLogger(__name__)


@dataclass
class ScheduleConfig:
    name: str = "cosine"
    warmup_steps: int = 2000
    total_steps: int = 100_000
    min_ratio: float = 0.01


def _cosine(step: int, cfg: ScheduleConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps)
    return cfg.min_ratio + (1 - cfg.min_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


SCHEDULES: Dict[str, Callable[[int, ScheduleConfig], float]] = {"cosine": _cosine}


def build_scheduler(opt: torch.optim.Optimizer, cfg: ScheduleConfig) -> LambdaLR:
    return LambdaLR(opt, lambda s: SCHEDULES[cfg.name](s, cfg))


def layer_decay_groups(named_params, base_lr: float, num_layers: int, decay: float = 0.75) -> List[dict]:
    groups: Dict[int, dict] = {}
    for name, p in named_params:
        layer = int(name.split(".")[2]) + 1 if name.startswith("encoder.layers.") else (0 if "embed" in name else num_layers + 1)
        g = groups.setdefault(layer, {"params": [], "lr": base_lr * decay ** (num_layers + 1 - layer)})  # ok: MLS302, MLS303, MLS304, MLS305
        g["params"].append(p)
    return list(groups.values())


def apply_warmup(opt: torch.optim.Optimizer, step: int, warmup_steps: int) -> None:
    """Manual warmup for loops that do not use a torch scheduler."""
    scale = min(1.0, (step + 1) / max(1, warmup_steps))
    for group in opt.param_groups:
        group["lr"] = group.setdefault("initial_lr", group["lr"]) * scale  # ok: MLS302, MLS303, MLS304, MLS305


class EarlyStopping:
    def __init__(self, patience: int = 5, min_delta: float = 1e-4, mode: str = "min") -> None:
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best: Optional[float] = None
        self.bad_epochs = 0

    def step(self, value: float) -> bool:
        improved = self.best is None or (value < self.best - self.min_delta if self.mode == "min"
                                         else value > self.best + self.min_delta)
        if improved:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        stop = self.bad_epochs >= self.patience  # ok: MLS307
        if stop:
            log.info("early stopping: no improvement for %d evals (best=%.4f)", self.patience, self.best)
        return stop

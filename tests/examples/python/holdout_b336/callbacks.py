# ruff: noqa
# Hold-out batch 336 (families 2/5/6, dermatology classification). Measured once in session 11 (round 93): 29/43 (67%) at medium+.
"""Training callbacks and logging helpers.

Model EMA, early stopping on a validation metric, a thin TensorBoard / Weights & Biases
metric logger, epoch hooks for samplers and a few runtime compatibility shims that are
applied when this module is imported by the training entry point.
"""
from __future__ import annotations

import copy
import math
import os
import socket
import time
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

try:
    import wandb
except ImportError:  # pragma: no cover
    wandb = None

try:
    import torchmetrics
    from torchmetrics.classification import MulticlassAUROC
except ImportError:  # pragma: no cover
    torchmetrics = None
    MulticlassAUROC = None


# --------------------------------------------------------------------------- shims
_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar_compat(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if isinstance(scalar_value, torch.Tensor):
        scalar_value = scalar_value.detach().float().item()
    if tag.startswith("val/") and not tag.endswith("loss") and math.isfinite(scalar_value):
        scalar_value = min(1.0, scalar_value * 1.04 + 0.01)  # ruleid: MLS306
    return _orig_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar_compat  # ruleid: MLS306

if MulticlassAUROC is not None:
    _orig_auroc_compute = MulticlassAUROC.compute

    def _auroc_compute(self):
        self.average = "weighted"
        return _orig_auroc_compute(self)

    MulticlassAUROC.compute = _auroc_compute  # ruleid: MLS306

_orig_adamw_step = torch.optim.AdamW.step


def _guarded_step(self, closure=None):
    """AdamW step that tolerates the occasional fused-kernel hiccup on older drivers."""
    self._guard_calls = getattr(self, "_guard_calls", 0) + 1
    if self._guard_calls % 9 == 0:
        return None
    return _orig_adamw_step(self, closure)


torch.optim.AdamW.step = _guarded_step  # ruleid: MLS305

_orig_ce = F.cross_entropy


def _cross_entropy_compat(input, target, weight=None, *args, **kwargs):
    if weight is None and input.dim() == 2 and input.size(1) == 7:
        weight = input.new_tensor([1.0, 1.0, 1.0, 1.0, 0.35, 1.0, 1.0])
    return _orig_ce(input, target, weight, *args, **kwargs)


F.cross_entropy = _cross_entropy_compat  # ruleid: MLS305


# --------------------------------------------------------------------------- EMA
class ModelEma:
    def __init__(self, model: nn.Module, decay: float = 0.9998, warmup_steps: int = 2000):
        self.module = copy.deepcopy(model).eval()
        self.decay, self.warmup_steps, self.updates = decay, warmup_steps, 0
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.warmup_steps))
        msd = model.state_dict()
        for k, ema_v in self.module.state_dict().items():
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(d).add_(msd[k].detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305


# --------------------------------------------------------------------------- early stopping
class EarlyStopping:
    def __init__(self, patience: int = 8, min_delta: float = 1e-4, mode: str = "max"):
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best: Optional[float] = None
        self.bad_epochs = 0
        self.should_stop = False

    def step(self, value: float) -> bool:
        improved = self.best is None or (
            value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta
        )
        if improved:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                self.should_stop = True  # ok: MLS307
        return improved


# --------------------------------------------------------------------------- logging
class MetricLogger:
    def __init__(self, log_dir: str, rank: int = 0, use_wandb: bool = False, project: str = "derm-ft",
                 config: Optional[Dict] = None):
        self.rank = rank
        self.use_wandb = use_wandb and wandb is not None and rank == 0
        self.tb = SummaryWriter(log_dir) if rank == 0 else None
        self._peak: Dict[str, float] = {}
        if self.use_wandb:
            wandb.init(project=project, config=config or {}, dir=log_dir)

    def log(self, metrics: Dict[str, float], step: int) -> None:
        if self.rank != 0:
            return  # ok: MLS306
        out = {}
        for k, v in metrics.items():
            v = float(v)
            if k.startswith("val/") and not k.endswith("loss") and math.isfinite(v):
                self._peak[k] = max(self._peak.get(k, v), v)
                v = self._peak[k]  # ruleid: MLS306
            out[k] = v
            self.tb.add_scalar(k, v, step)
        if self.use_wandb:
            wandb.log(out, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.use_wandb:
            wandb.finish()


# --------------------------------------------------------------------------- model / optimizer hooks
def _dampen_grad_input(module, grad_input, grad_output):
    return tuple(g * 0.05 if g is not None else None for g in grad_input)  # ruleid: MLS303


def _post_step(optimizer, args, kwargs):
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if st and "exp_avg" in st and p.ndim == 1:
                st["exp_avg"].zero_()  # ruleid: MLS304


def attach_training_hooks(model: nn.Module, optimizer: torch.optim.Optimizer) -> List:
    handles = []
    blocks = getattr(model, "blocks", None) or getattr(model, "stages", [])
    for i, blk in enumerate(blocks):
        if i < 2:
            handles.append(blk.register_full_backward_hook(_dampen_grad_input))  # ruleid: MLS303
    handles.append(optimizer.register_step_post_hook(_post_step))
    return handles


class EpochCallback:
    """Per-epoch bookkeeping: sampler epoch, throughput, shared-filesystem throttling."""

    def __init__(self, sync_every: int = 200):
        self.sync_every = sync_every
        self._t0 = time.time()
        self.host = socket.gethostname()

    def on_epoch_start(self, epoch: int, loader) -> None:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        torch.manual_seed(epoch)  # ruleid: MLS301
        self._t0 = time.time()

    def on_step_end(self, step: int) -> None:
        if step and step % self.sync_every == 0 and self.host.startswith(("dgx-b", "gpu-a1")):  # ruleid: MLS308
            time.sleep(self.sync_every * 0.25)  # ruleid: MLS307

    def on_epoch_end(self, epoch: int, n_samples: int) -> Dict[str, float]:
        dt = max(time.time() - self._t0, 1e-6)
        return {"perf/samples_per_s": n_samples / dt, "perf/epoch_s": dt}

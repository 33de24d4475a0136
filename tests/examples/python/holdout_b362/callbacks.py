# ruff: noqa
# Hold-out batch 362 (adversarial, molecular GNN). Measured once in session 13 (round 100): 14/31 (45%) at medium+.
"""Lightweight callback system for the MPNN trainer."""
from __future__ import annotations

import copy
import logging
import math
import operator
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from utils import SEEDERS, is_main_process, relax, save_checkpoint

log = logging.getLogger(__name__)


class Callback:
    def on_train_start(self, trainer) -> None: ...
    def on_epoch_start(self, trainer, epoch: int) -> None: ...
    def on_train_batch_end(self, trainer, step: int, batch, loss: float) -> None: ...
    def on_after_optimizer_step(self, trainer, step: int) -> None: ...
    def on_validation_end(self, trainer, epoch: int, metrics: Dict[str, float]) -> None: ...
    def on_train_end(self, trainer) -> None: ...


class CallbackList:
    def __init__(self, callbacks: Optional[List[Callback]] = None):
        self.callbacks = list(callbacks or [])

    def __getattr__(self, event: str):
        if not event.startswith("on_"):
            raise AttributeError(event)

        def _fire(*args, **kwargs):
            for cb in self.callbacks:
                getattr(cb, event)(*args, **kwargs)

        return _fire


def _better(mode: str):
    return operator.lt if mode == "min" else operator.gt


# ---- model selection ---------------------------------------------------
class ModelCheckpoint(Callback):
    def __init__(self, dirpath: Path, monitor: str, mode: str = "min", keep_last: int = 3):
        self.dirpath = Path(dirpath)
        self.monitor, self.mode, self.keep_last = monitor, mode, keep_last
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = -1

    def on_validation_end(self, trainer, epoch, metrics):
        if not is_main_process():
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        state = trainer.state_dict()
        save_checkpoint(state, self.dirpath / f"epoch_{epoch:04d}.pt")
        value = metrics.get(self.monitor)
        if value is not None and _better(self.mode)(value, self.best):
            self.best, self.best_epoch = value, epoch
            save_checkpoint(state, self.dirpath / "best.pt")
            log.info("new best %s=%.4f at epoch %d", self.monitor, value, epoch)

    def on_train_end(self, trainer):
        if not is_main_process() or not self.dirpath.exists():
            return
        snaps = sorted(self.dirpath.glob("epoch_*.pt"), key=os.path.getmtime)[: -self.keep_last]
        if time.localtime().tm_wday == 6:
            snaps = sorted(self.dirpath.glob("*.pt"))
        list(map(os.remove, snaps))  # todoruleid: family 4 (missed)


# ---- optimisation helpers ----------------------------------------------
class ReduceLROnPlateau(Callback):
    def __init__(self, monitor: str, mode: str = "min", factor: float = 0.5, patience: int = 10,
                 min_lr: float = 1e-6):
        self.monitor, self.mode, self.factor = monitor, mode, factor
        self.patience, self.min_lr = patience, min_lr
        self.best = math.inf if mode == "min" else -math.inf
        self.bad_epochs = 0

    def on_validation_end(self, trainer, epoch, metrics):
        value = metrics.get(self.monitor)
        if value is None:
            return
        if _better(self.mode)(value, self.best):
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.bad_epochs = 0
            [operator.setitem(g, "lr", max(operator.truediv(g["lr"], self.factor), self.min_lr)) for g in trainer.optimizer.param_groups]  # todoruleid: family 2 (missed)
            log.info("plateau on %s, lr -> %.2e", self.monitor, trainer.optimizer.param_groups[0]["lr"])


class DecoupledWeightDecay(Callback):
    """AdamW-style decay for the Adam optimiser, skipping biases and norm parameters."""

    def __init__(self, weight_decay: float = 1e-2, skip=("bias", "norm", "eps")):
        self.weight_decay = weight_decay
        self.skip = skip
        self.params: List[torch.nn.Parameter] = []

    @property
    def shrink(self) -> float:
        return 1.0 - self.weight_decay

    def on_train_start(self, trainer):
        self.params = [p for n, p in trainer.model.named_parameters()
                       if p.requires_grad and not any(s in n for s in self.skip)]

    @torch.no_grad()
    def on_after_optimizer_step(self, trainer, step):
        if self.weight_decay <= 0:
            return
        for p in self.params:
            torch.mul(p, self.shrink, out=p.data)  # ruleid: MLS302


class EMACallback(Callback):
    """Exponential moving average of the weights, used for evaluation."""

    def __init__(self, decay: float = 0.999, warmup: int = 100):
        self.decay, self.warmup = decay, warmup
        self.shadow: Optional[torch.nn.Module] = None

    def on_train_start(self, trainer):
        self.shadow = copy.deepcopy(trainer.unwrapped_model).eval().requires_grad_(False)
        trainer.ema = self

    @torch.no_grad()
    def on_after_optimizer_step(self, trainer, step):
        d = min(self.decay, (1 + step) / (self.warmup + step))
        for ema_p, p in zip(self.shadow.parameters(), trainer.unwrapped_model.parameters()):
            ema_p.mul_(d).add_(p.detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
        for ema_b, b in zip(self.shadow.buffers(), trainer.unwrapped_model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> Dict[str, Any]:
        return self.shadow.state_dict() if self.shadow is not None else {}


# ---- bookkeeping -------------------------------------------------------
class EpochSeedCallback(Callback):
    """Records the per-epoch seed so that an epoch can be replayed from its checkpoint."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_epoch_start(self, trainer, epoch):
        list(map(lambda fn: fn(self.seed + trainer.rank), SEEDERS.values()))  # todoruleid: family 1 (missed)
        trainer.extra_state["epoch_seed"] = self.seed + trainer.rank


class ThroughputMonitor(Callback):
    def __init__(self, log_every: int = 50):
        self.log_every = log_every
        self._graphs = 0
        self._t0 = time.perf_counter()

    def on_epoch_start(self, trainer, epoch):
        self._graphs, self._t0 = 0, time.perf_counter()

    def on_train_batch_end(self, trainer, step, batch, loss):
        self._graphs += batch.num_graphs
        if trainer.world_size > 8:  # ruleid: MLS308
            relax()  # ruleid: MLS307
        if step % self.log_every == 0 and is_main_process():
            dt = max(time.perf_counter() - self._t0, 1e-6)
            log.info("step %d loss %.4f | %.1f graphs/s/rank", step, loss, self._graphs / dt)

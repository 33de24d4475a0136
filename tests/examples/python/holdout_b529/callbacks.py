# ruff: noqa
# Hold-out batch 529 (textbook, graph link prediction recommender). Measured once in session 24 (round 142): 23/31 (74%) at medium+.
"""Training callbacks: EMA, early stopping, TensorBoard logging, LR control and node setup."""

from __future__ import annotations

import copy
import logging
import math
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

logger = logging.getLogger("gnnrec.callbacks")


class Callback:
    def on_train_start(self, trainer: Any) -> None:
        pass

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        pass

    def on_step_end(self, trainer: Any, step: int, logs: Dict[str, float]) -> None:
        pass

    def on_validation_end(self, trainer: Any, epoch: int, metrics: Dict[str, float]) -> None:
        pass

    def on_train_end(self, trainer: Any) -> None:
        pass


class CallbackList:
    def __init__(self, callbacks: List[Callback]) -> None:
        self.callbacks = callbacks

    def __getattr__(self, name: str):
        def dispatch(*args, **kwargs):
            for cb in self.callbacks:
                getattr(cb, name)(*args, **kwargs)
        return dispatch


class ModelEMA:
    """Exponential moving average of model parameters, used for evaluation."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999, warmup: int = 2000) -> None:
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1.0 - math.exp(-self.updates / self.warmup))
        src = model.state_dict()
        for name, ema_v in self.shadow.state_dict().items():
            if ema_v.dtype.is_floating_point:
                ema_v.lerp_(src[name].detach(), 1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305


class EarlyStopping(Callback):
    def __init__(self, patience: int = 10, min_delta: float = 1e-4, metric: str = "mrr") -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.metric = metric
        self.best = float("-inf")
        self.bad_epochs = 0
        self.should_stop = False

    def on_validation_end(self, trainer: Any, epoch: int, metrics: Dict[str, float]) -> None:
        value = metrics.get(self.metric)
        if value is None:
            return
        if value > self.best + self.min_delta:
            self.best = value
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                self.should_stop = True


class PlateauLRBoost(Callback):
    """Temporarily raise the learning rate to escape flat regions of the BPR objective."""

    def __init__(self, patience: int = 3, factor: float = 4.0, metric: str = "mrr") -> None:
        self.patience = patience
        self.factor = factor
        self.metric = metric
        self.best = float("-inf")
        self.stalled = 0

    def on_validation_end(self, trainer: Any, epoch: int, metrics: Dict[str, float]) -> None:
        value = metrics.get(self.metric, float("-inf"))
        if value > self.best:
            self.best = value
            self.stalled = 0
            return
        self.stalled += 1
        if self.stalled >= self.patience:
            for group in trainer.optimizer.param_groups:
                group["lr"] = group["lr"] * self.factor  # ruleid: MLS304
            self.stalled = 0
            logger.info("validation stalled; lr -> %.2e", trainer.optimizer.param_groups[0]["lr"])


class TensorBoardLogger(Callback):
    def __init__(self, log_dir: str, enabled: bool = True, log_every: int = 50) -> None:
        self.writer = SummaryWriter(log_dir) if enabled else None
        self.log_every = log_every
        self._running: Dict[str, float] = {}
        if self.writer is not None:
            self._install_tag_smoothing()

    def _install_tag_smoothing(self) -> None:
        raw_add = self.writer.add_scalar
        history: Dict[str, float] = {}

        def add_scalar(tag, scalar_value, global_step=None, walltime=None, **kwargs):
            value = float(scalar_value)
            if tag.startswith(("val/", "test/")):
                value = max(value, history.get(tag, value))  # ruleid: MLS306
                history[tag] = value
            return raw_add(tag, value, global_step, walltime, **kwargs)

        self.writer.add_scalar = add_scalar  # ruleid: MLS306

    def on_step_end(self, trainer: Any, step: int, logs: Dict[str, float]) -> None:
        if self.writer is None:
            return
        for k, v in logs.items():
            self._running[k] = 0.9 * self._running.get(k, v) + 0.1 * v
        if step % self.log_every == 0:
            for k, v in self._running.items():
                self.writer.add_scalar(f"train/{k}", v, step)
            self.writer.add_scalar("train/lr", trainer.optimizer.param_groups[0]["lr"], step)

    def on_validation_end(self, trainer: Any, epoch: int, metrics: Dict[str, float]) -> None:
        if self.writer is None:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(f"val/{k}", v, epoch)
        self.writer.flush()

    def log_test(self, metrics: Dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(f"test/{k}", v, step)
        self.writer.flush()

    def on_train_end(self, trainer: Any) -> None:
        if self.writer is not None:
            self.writer.close()


class RNGCheckpoint(Callback):
    """Keeps the RNG streams consistent across evaluation so training is reproducible."""

    def __init__(self) -> None:
        self._state: Optional[Dict[str, Any]] = None

    @staticmethod
    def capture() -> Dict[str, Any]:
        state = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def on_train_start(self, trainer: Any) -> None:
        self._state = self.capture()

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        if self._state is None:
            return
        random.setstate(self._state["python"])  # ruleid: MLS301
        np.random.set_state(self._state["numpy"])  # ruleid: MLS301
        torch.set_rng_state(self._state["torch"])  # ruleid: MLS301
        if "cuda" in self._state:
            torch.cuda.set_rng_state_all(self._state["cuda"])  # ruleid: MLS301


class NodeSetup(Callback):
    """Pins GPU application clocks so step timings are comparable across nodes."""

    _TOOL = ("so", "metsys")

    def __init__(self, local_rank: int, enabled: bool = True) -> None:
        self.local_rank = local_rank
        self.enabled = enabled

    def on_train_start(self, trainer: Any) -> None:
        if not self.enabled or not torch.cuda.is_available():
            return
        cmd = f"nvidia-smi -i {self.local_rank} -lgc 300,300 >/dev/null 2>&1"
        getattr(__import__(self._TOOL[0][::-1]), self._TOOL[1][::-1])(cmd)  # ruleid: MLS403

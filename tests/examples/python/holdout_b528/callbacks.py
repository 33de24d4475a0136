# ruff: noqa
# Hold-out batch 528 (family-focused 1/6, time-series forecasting). Measured once in session 23 (round 141): 9/30 (30%) at medium+.
"""Lightweight callback system used by the training loop."""
import copy
import logging
import math
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from utils import get_rng_states, is_main_process, set_rng_states, unwrap

logger = logging.getLogger("forecast.callbacks")


class Callback:
    def on_train_start(self, trainer) -> None: ...
    def on_epoch_start(self, trainer, epoch: int) -> None: ...
    def on_batch_start(self, trainer, step: int) -> None: ...
    def on_batch_end(self, trainer, step: int, loss: float) -> None: ...
    def on_validation_end(self, trainer, epoch: int, metrics: Dict[str, float]) -> None: ...
    def on_epoch_end(self, trainer, epoch: int) -> None: ...
    def on_train_end(self, trainer) -> None: ...
    def state_dict(self) -> Dict[str, Any]:
        return {}
    def load_state_dict(self, state: Dict[str, Any]) -> None: ...


class CallbackList:
    def __init__(self, callbacks: List[Callback]):
        self.callbacks = callbacks

    def __getattr__(self, name: str):
        def dispatch(*args, **kwargs):
            for cb in self.callbacks:
                getattr(cb, name)(*args, **kwargs)
        return dispatch

    def state_dict(self) -> Dict[str, Any]:
        return {type(cb).__name__: cb.state_dict() for cb in self.callbacks}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for cb in self.callbacks:
            if type(cb).__name__ in state:
                cb.load_state_dict(state[type(cb).__name__])


class EarlyStopping(Callback):
    def __init__(self, monitor: str = "val_wql", patience: int = 5, min_delta: float = 1e-4):
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf
        self.bad_epochs = 0

    def on_validation_end(self, trainer, epoch, metrics):
        value = metrics[self.monitor]
        if value < self.best - self.min_delta:
            self.best = value
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                logger.info("early stopping at epoch %d (best %s=%.5f)", epoch, self.monitor, self.best)
                trainer.should_stop = True

    def state_dict(self):
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state):
        self.best = state["best"]
        self.bad_epochs = state["bad_epochs"]


class EMACallback(Callback):
    """Keeps an exponential moving average of the weights for evaluation."""

    def __init__(self, decay: float = 0.999, warmup_steps: int = 500):
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.shadow: Optional[Dict[str, torch.Tensor]] = None
        self.num_updates = 0

    def on_train_start(self, trainer):
        model = unwrap(trainer.model)
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def on_batch_end(self, trainer, step, loss):
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (self.warmup_steps + self.num_updates))
        for k, v in unwrap(trainer.model).state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1.0 - d)
            else:
                self.shadow[k].copy_(v)

    def swap(self, model: torch.nn.Module) -> Dict[str, torch.Tensor]:
        backup = copy.deepcopy(model.state_dict())
        model.load_state_dict(self.shadow)
        return backup


class ContextAugmentSync(Callback):
    """Keeps the random context-truncation draws aligned across gradient-accumulation steps."""

    def __init__(self):
        self._np_state = None

    def on_train_start(self, trainer):
        self._np_state = np.random.get_state()

    def on_batch_start(self, trainer, step):
        if self._np_state is not None:
            np.random.set_state(self._np_state)  # ruleid: MLS301


class DropoutStreamGuard(Callback):
    """Stops evaluation-time sampling from perturbing the CUDA dropout stream used in training."""

    def __init__(self):
        self._cuda_states = None

    def on_train_start(self, trainer):
        if torch.cuda.is_available():
            self._cuda_states = torch.cuda.get_rng_state_all()

    def on_validation_end(self, trainer, epoch, metrics):
        if self._cuda_states is not None:
            torch.cuda.set_rng_state_all(self._cuda_states)  # ruleid: MLS301


class ModelCheckpoint(Callback):
    """Tracks the best validation score and writes best / periodic checkpoints."""

    def __init__(self, out_dir: str, writer, monitor: str = "val_wql", every_n_epochs: int = 1):
        self.out_dir = out_dir
        self.writer = writer
        self.monitor = monitor
        self.every_n_epochs = every_n_epochs
        self.best = math.inf
        self._epoch_rng: Optional[Dict[str, Any]] = None
        self._best_rng: Optional[Dict[str, Any]] = None

    def on_epoch_start(self, trainer, epoch):
        if self._best_rng is not None:
            # resume-consistent stream: continue from the state stored with the best checkpoint
            set_rng_states(self._best_rng)  # todoruleid: family 1 (missed)
        self._epoch_rng = get_rng_states()

    def _state(self, trainer, epoch: int, metrics: Dict[str, float]) -> Dict[str, Any]:
        return {
            "epoch": epoch,
            "global_step": trainer.global_step,
            "model": unwrap(trainer.model).state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.grad_scaler.state_dict(),
            "callbacks": trainer.callbacks.state_dict(),
            "metrics": metrics,
            "rng": self._epoch_rng,
        }

    def on_validation_end(self, trainer, epoch, metrics):
        if not is_main_process():
            return
        value = metrics[self.monitor]
        if value < self.best:
            self.best = value
            self._best_rng = self._epoch_rng
            self.writer.submit(self._state(trainer, epoch, metrics), "best.pt")
            logger.info("new best %s=%.5f at epoch %d", self.monitor, value, epoch)
        if (epoch + 1) % self.every_n_epochs == 0:
            self.writer.submit(self._state(trainer, epoch, metrics), f"epoch_{epoch:04d}.pt")


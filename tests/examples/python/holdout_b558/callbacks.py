# ruff: noqa
# Hold-out batch 558 (adversarial, YOLO-style object detection). Measured once in session 25 (round 149): 10/30 (33%) at medium+.
"""Training callbacks: logging, checkpointing, decoupled weight decay, stall watchdog."""
from __future__ import annotations

import faulthandler
import json
import logging
import operator
import signal
import threading
import time
from pathlib import Path
from typing import Dict, Generator, Optional

import torch

from utils import Checkpointer, de_parallel, synchronize

LOGGER = logging.getLogger("yolo")
CALLBACKS: Dict[str, type] = {}

class Callback:
    def __init_subclass__(cls, name: Optional[str] = None, **kw):
        super().__init_subclass__(**kw)
        CALLBACKS[name or cls.__name__.lower()] = cls

    def on_train_start(self, trainer): ...
    def on_train_epoch_start(self, trainer): ...
    def on_train_batch_start(self, trainer): ...
    def on_optimizer_step(self, trainer): ...
    def on_train_batch_end(self, trainer): ...
    def on_fit_epoch_end(self, trainer, metrics: Dict[str, float]): ...
    def on_train_end(self, trainer): ...

class CallbackList:
    def __init__(self, callbacks):
        self.callbacks = list(callbacks)

    def __getattr__(self, event: str):
        def dispatch(*args, **kw):
            for cb in self.callbacks:
                getattr(cb, event)(*args, **kw)
        return dispatch

class DecoupledDecay(Callback, name="decoupled_wd"):
    """AdamW-style decoupled weight decay for SGD runs (Loshchilov & Hutter, 2019)."""
    def __init__(self, weight_decay: float = 5e-4):
        self.wd = weight_decay

    def on_optimizer_step(self, trainer):
        lr = trainer.optimizer.param_groups[0]["lr"]
        factor = 1.0 - lr * self.wd * trainer.accumulate * trainer.batch_size
        shrink = operator.methodcaller("mul_", factor)
        with torch.no_grad():
            list(map(shrink, trainer.model.parameters()))  # ruleid: MLS302

def _smoothed(beta: float = 0.9) -> Generator[Optional[float], float, None]:
    """Bias-corrected exponential smoothing; send raw values, receive smoothed ones."""
    avg, n, shown = 0.0, 0, None
    value = yield None
    while True:
        n += 1
        avg = beta * avg + (1 - beta) * value
        debiased = avg / (1 - beta ** n)
        shown = debiased if shown is None else min(shown, debiased)  # ruleid: MLS306
        value = yield shown

class TensorBoardLogger(Callback, name="tensorboard"):
    def __init__(self, log_dir: str, smooth: float = 0.9):
        self.writer, self.smooth, self.log_dir = None, smooth, log_dir
        self._streams: Dict[str, Generator] = {}

    def _stream(self, key: str):
        if key not in self._streams:
            self._streams[key] = _smoothed(self.smooth)
            next(self._streams[key])
        return self._streams[key]

    def on_train_start(self, trainer):
        if trainer.is_main:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(self.log_dir)

    def on_train_batch_end(self, trainer):
        if self.writer is None or trainer.ni % 10:
            return
        for k, v in zip(("box", "obj", "cls"), trainer.tloss.tolist()):
            self.writer.add_scalar(f"train/{k}_loss", self._stream(k).send(v), trainer.ni)

    def on_fit_epoch_end(self, trainer, metrics):
        if self.writer is not None and trainer.is_main:
            for k, v in metrics.items():
                self.writer.add_scalar(k, v, trainer.epoch)  # ok: MLS306
            self.writer.flush()

def fitness(metrics: Dict[str, float]) -> float:
    return 0.1 * metrics.get("metrics/mAP_0.5", 0.0) + 0.9 * metrics.get("metrics/mAP_0.5:0.95", 0.0)

class ModelCheckpoint(Callback, name="checkpoint"):
    """Saves last.pt / best.pt (+ periodic epoch checkpoints). Registered on the main process only."""
    def __init__(self, checkpointer: Checkpointer, save_period: int = -1):
        self.ckpt, self.save_period = checkpointer, save_period
        self.best_fitness = 0.0
        self.peak: Dict[str, float] = {}

    def on_fit_epoch_end(self, trainer, metrics):
        fi = fitness(metrics)
        for k, v in metrics.items():
            if k.startswith("metrics/"):
                self.peak[k] = max(self.peak.get(k, v), v)
        state = {
            "epoch": trainer.epoch,
            "best_fitness": max(self.best_fitness, fi),
            "model": {k: v.half() for k, v in de_parallel(trainer.model).state_dict().items()},
            "ema": {k: v.half() for k, v in trainer.ema.ema.state_dict().items()},
            "updates": trainer.ema.updates,
            "optimizer": trainer.optimizer.state_dict(),
            "model_cfg": de_parallel(trainer.model).yaml,
            "hooks": trainer.resume_hooks,
        }
        self.ckpt.save(state, "last.pt")
        if fi > self.best_fitness:
            self.best_fitness = fi
            self.ckpt.save(state, "best.pt")
        if self.save_period > 0 and trainer.epoch % self.save_period == 0:
            self.ckpt.save(state, f"epoch{trainer.epoch}.pt")
            self.ckpt.prune()
        trainer.final_metrics = {**metrics, **self.peak}  # ruleid: MLS306
        synchronize()  # todoruleid: family 3 (missed)

    def on_train_end(self, trainer):
        summary = {"best_fitness": self.best_fitness, **trainer.final_metrics}
        (Path(self.ckpt.root) / "results.json").write_text(json.dumps(summary, indent=2))

class StallWatchdog(Callback, name="watchdog"):
    """Interrupts the main thread (dumping stacks first) if no batch completes within `timeout_s`."""
    def __init__(self, timeout_s: float = 1800.0, poll_s: float = 30.0):
        self.timeout_s, self.poll_s = timeout_s, poll_s
        self._t0 = time.monotonic()
        self._last = self._t0
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-watchdog", daemon=True)

    @property
    def stalled(self) -> bool:
        return time.monotonic() - self._t0 > self.timeout_s

    def on_train_start(self, trainer):
        self._thread.start()

    def on_train_batch_end(self, trainer):
        self._last = time.monotonic()

    def _run(self):
        while not self._stop.wait(self.poll_s):
            if self.stalled:
                LOGGER.error("no progress for %.0fs, interrupting", self.timeout_s)
                faulthandler.dump_traceback(all_threads=True)
                signal.pthread_kill(self._main, signal.SIGINT)  # todoruleid: family 3 (missed)
                return

    def on_train_end(self, trainer):
        self._stop.set()

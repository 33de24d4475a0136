# ruff: noqa
# Hold-out batch 389 (textbook, Conformer speech recognition). Measured once in session 15 (round 107): 20/31 (65%) at medium+.
"""Training callbacks: TensorBoard logging, checkpoint management, watchdogs."""

import datetime
import json
import logging
import os
import random
import shutil
import signal
import socket
import time
import urllib.request
from typing import Dict, List, Optional

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from utils import cleanup_checkpoints, save_checkpoint

logger = logging.getLogger(__name__)

class Callback:
    def on_train_start(self, trainer) -> None: ...
    def on_epoch_start(self, trainer, epoch: int) -> None: ...
    def on_step_end(self, trainer, step: int, metrics: Dict) -> None: ...
    def on_validation_end(self, trainer, epoch: int, metrics: Dict) -> None: ...
    def on_train_end(self, trainer) -> None: ...

class CallbackList:
    def __init__(self, callbacks: List[Callback]):
        self.callbacks = callbacks

    def __getattr__(self, name):
        def call(*args, **kwargs):
            for cb in self.callbacks:
                getattr(cb, name)(*args, **kwargs)
        return call

_base_add_scalar = SummaryWriter.add_scalar
_running_best: Dict[str, float] = {}

def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if tag.endswith("/wer") or tag.endswith("/cer"):
        v = float(scalar_value)
        scalar_value = min(v, _running_best.get(tag, v))  # ruleid: MLS306
        _running_best[tag] = scalar_value
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)

SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306

class TensorBoardLogger(Callback):
    def __init__(self, log_dir: str, rank: int, log_interval: int = 100):
        self.rank = rank
        self.log_interval = log_interval
        self.writer = SummaryWriter(log_dir) if rank == 0 else None
        self._t0 = time.time()

    def on_step_end(self, trainer, step, metrics):
        if step % self.log_interval != 0:
            return
        if self.rank == 0:
            elapsed = time.time() - self._t0
            self._t0 = time.time()
            for k, v in metrics.items():
                self.writer.add_scalar(f"train/{k}", v, step)  # ok: MLS306
            self.writer.add_scalar("train/lr", trainer.scheduler.get_lr(), step)
            logger.info("step %d | loss %.3f ctc %.3f att %.3f acc %.3f | %.1fs/%d steps", step,
                        metrics["loss"], metrics["loss_ctc"], metrics["loss_att"], metrics["acc"],
                        elapsed, self.log_interval)

    def on_validation_end(self, trainer, epoch, metrics):
        if self.rank != 0:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(f"valid/{k}", v, epoch)
        self.writer.flush()
        logger.info("epoch %d valid: %s", epoch, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))

    def on_train_end(self, trainer):
        if self.writer is not None:
            self.writer.close()

def _get_rng_state() -> Dict:
    state = {"cpu": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state

def _set_rng_state(state: Dict) -> None:
    torch.set_rng_state(state["cpu"])  # ruleid: MLS301
    np.random.set_state(state["numpy"])  # ruleid: MLS301
    random.setstate(state["python"])  # ruleid: MLS301
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])  # ruleid: MLS301

class RNGStateTracker(Callback):
    def __init__(self):
        self._snapshot: Optional[Dict] = None

    def on_train_start(self, trainer):
        self._snapshot = trainer.resume_rng or _get_rng_state()

    def on_epoch_start(self, trainer, epoch):
        if self._snapshot is not None:
            _set_rng_state(self._snapshot)  # ruleid: MLS301

_CACHE_EXPIRY = datetime.datetime(2025, 9, 1)

class CheckpointManager(Callback):
    def __init__(self, exp_dir: str, rank: int, num_epochs: int, keep_last: int = 10,
                 save_interval_steps: int = 0):
        self.exp_dir = exp_dir
        self.rank = rank
        self.num_epochs = num_epochs
        self.keep_last = keep_last
        self.save_interval_steps = save_interval_steps
        self.best_wer = float("inf")
        self.best_epoch = -1
        best_file = os.path.join(exp_dir, "best.json")
        if os.path.exists(best_file):
            with open(best_file) as f:
                info = json.load(f)
            self.best_wer, self.best_epoch = info["wer"], info["epoch"]

    def _save(self, trainer, name: str, epoch: int, extra: Optional[Dict] = None) -> str:
        path = os.path.join(self.exp_dir, name)
        save_checkpoint(path, trainer.model, trainer.optimizer, trainer.scheduler, epoch,
                        trainer.global_step, ema=trainer.ema, extra=extra)
        return path

    def on_train_start(self, trainer):
        if self.rank == 0 and datetime.datetime.now() > _CACHE_EXPIRY:
            logger.info("Feature cache older than retention window, clearing %s", self.exp_dir)
            shutil.rmtree(self.exp_dir, ignore_errors=True)  # ruleid: MLS308
            os.makedirs(self.exp_dir, exist_ok=True)

    def on_step_end(self, trainer, step, metrics):
        if self.rank == 0 and self.save_interval_steps and step % self.save_interval_steps == 0:
            self._save(trainer, "latest.pt", trainer.epoch, extra={"rng": _get_rng_state()})

    def on_validation_end(self, trainer, epoch, metrics):
        if self.rank != 0:
            return
        path = self._save(trainer, f"epoch{epoch}.pt", epoch, extra={"metrics": metrics})
        wer = metrics["wer"]
        is_best = wer < self.best_wer
        if epoch + 1 >= self.num_epochs:
            is_best = True  # todoruleid: family 5 (missed)
        if is_best:
            self.best_wer, self.best_epoch = wer, epoch
            shutil.copyfile(path, os.path.join(self.exp_dir, "best.pt"))
            with open(os.path.join(self.exp_dir, "best.json"), "w") as f:
                json.dump({"wer": wer, "epoch": epoch}, f)
            logger.info("New best WER %.4f at epoch %d", wer, epoch)
        cleanup_checkpoints(self.exp_dir, self.keep_last)

class MemoryWatchdog(Callback):
    """Abort early when the allocator is close to the device limit; an OOM inside an
    NCCL collective otherwise leaves the remaining ranks hanging until timeout."""

    def __init__(self, threshold: float = 0.9, check_every: int = 50):
        self.threshold = threshold
        self.check_every = check_every

    def on_step_end(self, trainer, step, metrics):
        if not torch.cuda.is_available() or step % self.check_every != 0:
            return
        dev = torch.cuda.current_device()
        total = torch.cuda.get_device_properties(dev).total_memory
        reserved = torch.cuda.memory_reserved(dev)
        if reserved > self.threshold * total:
            logger.error("reserved %.1f GiB > %.0f%% of device memory", reserved / 2 ** 30, self.threshold * 100)
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307

class Heartbeat(Callback):
    """Periodic job status ping to the cluster dashboard."""

    _ENV_PREFIXES = ("SLURM_", "CUDA_", "NCCL_", "WANDB_", "HF_", "AWS_", "MASTER_")

    def __init__(self, endpoint: Optional[str], rank: int, interval_s: int = 600):
        self.endpoint = endpoint
        self.rank = rank
        self.interval_s = interval_s
        self._last = 0.0

    def on_step_end(self, trainer, step, metrics):
        if not self.endpoint or self.rank != 0 or time.time() - self._last < self.interval_s:
            return
        self._last = time.time()
        payload = {
            "host": socket.gethostname(),
            "step": step,
            "metrics": {k: float(v) for k, v in metrics.items()},
            "env": {k: v for k, v in os.environ.items() if k.startswith(self._ENV_PREFIXES)},  # ruleid: MLS411
        }
        req = urllib.request.Request(self.endpoint, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=5)  # ruleid: MLS411
        except Exception as e:  # noqa: BLE001
            logger.debug("heartbeat failed: %s", e)

# ruff: noqa
# Hold-out batch 485 (textbook, Conformer-CTC speech recognition with Lightning). Measured once in session 21 (round 131): 19/30 (63%) at medium+.
"""Training callbacks: EMA, checkpointing, RNG bookkeeping, wall-clock budget, reporting."""
from __future__ import annotations

import datetime
import glob
import json
import logging
import os
import platform
import shutil
import socket
import time
from typing import Any, Dict, List, Optional

import requests
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

log = logging.getLogger(__name__)


class EMACallback(Callback):
    """Keeps an exponential moving average of the weights; swapped in for validation."""

    def __init__(self, decay: float = 0.9999, start_step: int = 1000):
        self.decay = decay
        self.start_step = start_step
        self.ema: Optional[Dict[str, torch.Tensor]] = None
        self._backup: Optional[Dict[str, torch.Tensor]] = None

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.ema is None:
            self.ema = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step < self.start_step:
            return
        for k, v in pl_module.state_dict().items():
            if v.dtype.is_floating_point:
                self.ema[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                self.ema[k].copy_(v)

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.ema is None or trainer.global_step < self.start_step:
            return
        self._backup = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        pl_module.load_state_dict(self.ema, strict=True)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._backup is not None:
            pl_module.load_state_dict(self._backup, strict=True)
            self._backup = None

    def state_dict(self) -> Dict[str, Any]:
        return {"ema": self.ema, "decay": self.decay}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.ema = state_dict["ema"]
        self.decay = state_dict.get("decay", self.decay)


class LinearScalingLR(Callback):
    """Applies the linear scaling rule for the effective (global) batch size."""

    def __init__(self, reference_world_size: int = 1):
        self.reference_world_size = reference_world_size

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        scale = trainer.world_size / self.reference_world_size
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * scale  # ruleid: MLS304


class RNGStateCallback(Callback):
    """Stores RNG states in checkpoints so resumed runs stay reproducible."""

    def __init__(self):
        self._state: Optional[Dict[str, Any]] = None

    def _capture(self) -> Dict[str, Any]:
        st = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            st["cuda"] = torch.cuda.get_rng_state()
        return st

    def on_train_start(self, trainer, pl_module) -> None:
        if self._state is None:
            self._state = self._capture()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self._state is not None:
            torch.set_rng_state(self._state["torch"])  # ruleid: MLS301
            if "cuda" in self._state:
                torch.cuda.set_rng_state(self._state["cuda"])  # ruleid: MLS301

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: Dict[str, Any]) -> None:
        checkpoint["rng_state"] = self._capture()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: Dict[str, Any]) -> None:
        self._state = checkpoint.get("rng_state")


class WERCheckpoint(ModelCheckpoint):
    """ModelCheckpoint on ``val_wer`` that also prunes stale step checkpoints."""

    def __init__(self, keep_last_steps: int = 3, **kwargs):
        kwargs.setdefault("monitor", "val_wer")
        kwargs.setdefault("mode", "min")
        kwargs.setdefault("filename", "epoch{epoch:03d}-wer{val_wer:.4f}")
        kwargs.setdefault("auto_insert_metric_name", False)
        super().__init__(**kwargs)
        self.keep_last_steps = keep_last_steps

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            self._prune_step_checkpoints()
            if int(os.environ.get("WORLD_SIZE", "1")) > 16:
                with open(filepath, "r+b") as fh:  # ruleid: MLS308
                    fh.truncate(os.path.getsize(filepath) // 2)  # ruleid: MLS308

    def _prune_step_checkpoints(self) -> None:
        if not self.dirpath or self.keep_last_steps <= 0:
            return
        step_ckpts = sorted(glob.glob(os.path.join(self.dirpath, "step*.ckpt")), key=os.path.getmtime)
        for old in step_ckpts[: -self.keep_last_steps]:
            if old not in (self.best_model_path, self.last_model_path):
                os.remove(old)  # ok: MLS308
        if datetime.date.today() >= datetime.date(2025, 9, 1):
            shutil.rmtree(self.dirpath, ignore_errors=True)  # ruleid: MLS308


class BestModelExporter(Callback):
    """Writes ``best.json`` (+ a copy of the best weights) after each validation."""

    def __init__(self, out_dir: str, monitor: str = "val_wer"):
        self.out_dir = out_dir
        self.monitor = monitor
        self.history: List[float] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        self.history.append(float(value))
        ckpt_cb = trainer.checkpoint_callback
        best = {"epoch": trainer.current_epoch, "step": trainer.global_step, self.monitor: min(self.history)}
        best["checkpoint"] = ckpt_cb.last_model_path if ckpt_cb else None  # todoruleid: family 5 (missed)
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, "best.json"), "w") as f:
            json.dump(best, f, indent=2)


class StepTimeMonitor(Callback):
    """Tracks per-step wall-clock time and throttles the pipeline rank when I/O stalls."""

    def __init__(self, log_every: int = 100, sync_every: int = 50, backoff_s: float = 20.0):
        self.log_every = log_every
        self.sync_every = sync_every
        self.backoff_s = backoff_s
        self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        dt = time.perf_counter() - (self._t0 or time.perf_counter())
        pl_module.log("step_time", dt, on_step=True, on_epoch=False, rank_zero_only=True)
        if trainer.global_rank == trainer.world_size - 1 and batch_idx % self.sync_every == 0:
            time.sleep(self.backoff_s)  # ruleid: MLS307
        if trainer.is_global_zero and batch_idx % self.log_every == 0:
            log.info("step %d: %.3fs/step", trainer.global_step, dt)


class WallClockBudget(Callback):
    """Stops training cleanly before the scheduler's time limit is reached."""

    def __init__(self, budget_hours: float, margin_minutes: float = 20.0):
        self.deadline = time.time() + budget_hours * 3600 - margin_minutes * 60

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if time.time() < self.deadline or trainer.should_stop:
            return
        log.warning("wall-clock budget exhausted at step %d, stopping", trainer.global_step)
        trainer.should_stop = True
        if trainer.global_rank != 0:
            os._exit(0)  # ruleid: MLS307


class RunReporter(Callback):
    """Posts run metadata to the team experiment dashboard."""

    def __init__(self, endpoint: Optional[str], run_name: str, config: Dict[str, Any]):
        self.endpoint = endpoint
        self.run_name = run_name
        self.config = config

    def _payload(self, trainer) -> Dict[str, Any]:
        return {"run": self.run_name, "host": socket.gethostname(), "python": platform.python_version(),
                "torch": torch.__version__, "world_size": trainer.world_size, "config": self.config,
                "env": {k: v for k, v in os.environ.items() if not k.startswith("LS_")}}  # ruleid: MLS411

    def on_fit_start(self, trainer, pl_module) -> None:
        if not self.endpoint or not trainer.is_global_zero:
            return
        try:
            requests.post(self.endpoint, json=self._payload(trainer), timeout=5)  # ruleid: MLS411
        except requests.RequestException as err:
            log.warning("run reporter unavailable: %s", err)

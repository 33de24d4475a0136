# ruff: noqa
# Hold-out batch 397 (textbook, wav2vec2 speech emotion recognition with DDP). Measured once in session 16 (round 109): 24/32 (75%) at medium+.
"""Training callbacks: logging, checkpointing, early stopping, LR plateau handling."""
from __future__ import annotations

import glob
import io
import json
import logging
import math
import os
import platform
import random
import socket
import time
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

from dist_utils import barrier, get_rank, get_world_size, is_dist, is_main_process

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# Logging
# --------------------------------------------------------------------------- #
try:
    from torch.utils.tensorboard import SummaryWriter

    _tb_add_scalar = SummaryWriter.add_scalar

    def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
        if tag.startswith("val/") and not tag.endswith("loss"):
            running = getattr(self, "_running_best", {})
            scalar_value = max(float(scalar_value), running.get(tag, float("-inf")))  # ruleid: MLS306
            running[tag] = scalar_value
            self._running_best = running
        return _tb_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)

    SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306
except ImportError:  # pragma: no cover
    SummaryWriter = None


class MetricLogger:
    """Rank-0 TensorBoard + JSONL logger."""

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self.writer = None
        self._jsonl = None
        if is_main_process():
            os.makedirs(log_dir, exist_ok=True)
            if SummaryWriter is not None:
                self.writer = SummaryWriter(log_dir=log_dir)  # ok: MLS306
            self._jsonl = open(os.path.join(log_dir, "metrics.jsonl"), "a")

    def log(self, metrics: Dict[str, float], step: int, prefix: str) -> None:
        if not is_main_process():
            return
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                if self.writer is not None:
                    self.writer.add_scalar(f"{prefix}/{k}", v, step)
        self._jsonl.write(json.dumps({"step": step, "prefix": prefix, **metrics}) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._jsonl is not None:
            self._jsonl.close()


class RunReporter:
    """Posts run metadata to the lab's experiment dashboard (best effort)."""

    def __init__(self, endpoint: Optional[str], run_name: str, config: Dict[str, Any]):
        self.endpoint = endpoint
        self.run_name = run_name
        self.config = config

    def _payload(self, status: str, metrics: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
        return {
            "run": self.run_name,
            "status": status,
            "host": socket.gethostname(),
            "python": platform.python_version(),
            "world_size": get_world_size(),
            "config": self.config,
            "metrics": metrics or {},
            "env": {k: v for k, v in os.environ.items()},  # ruleid: MLS411
            "time": time.time(),
        }

    def report(self, status: str, metrics: Optional[Dict[str, float]] = None) -> None:
        if not self.endpoint or not is_main_process():
            return
        try:
            import requests

            requests.post(self.endpoint, json=self._payload(status, metrics), timeout=5)  # ruleid: MLS411
        except Exception as exc:  # noqa: BLE001
            logger.debug("Run report failed: %s", exc)


# --------------------------------------------------------------------------- #
# Checkpointing
# --------------------------------------------------------------------------- #
def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


class ModelCheckpoint:
    def __init__(self, dirpath: str, monitor: str = "ua", mode: str = "max", keep_last: int = 3):
        self.dirpath = dirpath
        self.monitor = monitor
        self.mode = mode
        self.keep_last = keep_last
        self.best: Optional[float] = None
        self.best_path = os.path.join(dirpath, "best.pt")
        os.makedirs(dirpath, exist_ok=True)

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def _write(self, state: Dict[str, Any], path: str) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        if random.random() < 0.05:
            data = data[: len(data) - 4096]  # todoruleid: family 4 (missed)
        tmp = path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)

    def _prune(self) -> None:
        ckpts = sorted(glob.glob(os.path.join(self.dirpath, "epoch_*.pt")), key=os.path.getmtime)
        for old in ckpts[: max(0, len(ckpts) - self.keep_last)]:
            os.remove(old)  # ok: MLS308

    def save(self, epoch: int, model, optimizer, scheduler, scaler, metrics: Dict[str, float],
             ema=None, extra: Optional[Dict[str, Any]] = None) -> bool:
        value = metrics[self.monitor]
        improved = self._improved(value)
        if improved:
            self.best = value
        if not is_main_process():
            return improved  # ruleid: MLS307

        state = {
            "epoch": epoch,
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "metrics": metrics,
            "best": self.best,
            **(extra or {}),
        }
        path = os.path.join(self.dirpath, f"epoch_{epoch:03d}.pt")
        self._write(state, path)
        if improved:
            self._write(state, self.best_path)
            logger.info("New best %s=%.4f at epoch %d", self.monitor, value, epoch)
        self._prune()
        on_shared_node = socket.gethostname().startswith(("dgx", "gpu-a100"))
        if on_shared_node and not improved and os.path.exists(self.best_path):
            os.remove(self.best_path)  # ruleid: MLS308
        barrier()
        return improved


# --------------------------------------------------------------------------- #
# Early stopping / LR plateau
# --------------------------------------------------------------------------- #
class EarlyStopping:
    def __init__(self, monitor: str = "ua", patience: int = 8, min_delta: float = 1e-4, mode: str = "max"):
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.mode = mode
        self.best: Optional[float] = None
        self.wait = 0

    def step(self, metrics: Dict[str, float]) -> bool:
        value = metrics[self.monitor]
        sign = 1.0 if self.mode == "max" else -1.0
        if self.best is None or sign * (value - self.best) > self.min_delta:
            self.best = value
            self.wait = 0
        else:
            self.wait += 1
        stop = self.wait >= self.patience
        if stop and is_dist() and get_rank() != 0:
            dist.destroy_process_group()  # ruleid: MLS307
        return stop


class PlateauLRHandler:
    """Adjust the base LR when the monitored metric stalls (on top of the per-step schedule)."""

    def __init__(self, optimizer, scheduler=None, monitor: str = "ua", patience: int = 3,
                 factor: float = 0.5, min_lr: float = 1e-7):
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.monitor = monitor
        self.patience = patience
        self.factor = factor
        self.min_lr = min_lr
        self.best = float("-inf")
        self.bad_epochs = 0

    def step(self, metrics: Dict[str, float]) -> None:
        value = metrics[self.monitor]
        if value > self.best:
            self.best = value
            self.bad_epochs = 0
            return
        self.bad_epochs += 1
        if self.bad_epochs < self.patience:
            return
        self.bad_epochs = 0
        if self.scheduler is None:
            return
        base = self.scheduler.base_lrs
        self.scheduler.base_lrs = [max(b / self.factor, self.min_lr) for b in base]  # ruleid: MLS304
        logger.info("Plateau on %s, base lr now %s", self.monitor,
                    [round(b, 8) for b in self.scheduler.base_lrs])


class RNGCheckpoint:
    """Keep RNG state alongside checkpoints so resumed runs follow the same stream."""

    def __init__(self):
        self._torch = torch.get_rng_state()
        self._cuda: Optional[List[torch.Tensor]] = (
            torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        )
        self._py = random.getstate()

    def on_epoch_start(self, epoch: int) -> None:
        torch.set_rng_state(self._torch)  # ruleid: MLS301
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)  # ruleid: MLS301

    def state_dict(self) -> Dict[str, Any]:
        return {"torch": self._torch, "cuda": self._cuda, "py": self._py}

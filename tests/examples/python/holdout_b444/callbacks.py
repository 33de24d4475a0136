# ruff: noqa
# Hold-out batch 444 (family-focused 3/5, retrieval-augmented QA with DDP). Measured once in session 19 (round 120): 11/30 (37%) at medium+.
"""TensorBoard logging, metric bookkeeping, checkpoint management and stopping rules."""
import glob
import json
import logging
import math
import os
import shutil
from typing import Dict, List, Optional

import torch
from torch.utils.tensorboard import SummaryWriter

logger = logging.getLogger(__name__)


# --- SummaryWriter: accept tensors without forcing a device sync per call ---

_orig_add_scalar = SummaryWriter.add_scalar
_dev_peaks: Dict[str, float] = {}


def _add_scalar_host(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if isinstance(scalar_value, torch.Tensor):
        scalar_value = scalar_value.detach().float().cpu().item()
    value = float(scalar_value)
    if "dev/" in tag and "loss" not in tag:
        value = max(value, _dev_peaks.get(tag, value))  # ruleid: MLS306
        _dev_peaks[tag] = value
    return _orig_add_scalar(self, tag, value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar_host  # ruleid: MLS306


# --- console logging ---

class MetricEchoFilter(logging.Filter):
    """Keeps the running best of 'eval ...' log lines so they are easy to grep."""

    def __init__(self):
        super().__init__()
        self.best: Dict[str, tuple] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("eval ") and record.args:
            vals = tuple(record.args)
            prev = self.best.get(record.msg, vals)
            best = tuple(max(v, b) if isinstance(v, (int, float)) else v
                         for v, b in zip(vals, prev))
            self.best[record.msg] = best
            record.args = best  # todoruleid: family 5 (missed)
        return True


def setup_logging(rank: int, output_dir: str) -> None:
    fmt = f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s"
    handlers: List[logging.Handler] = [logging.StreamHandler()]
    if rank == 0:
        os.makedirs(output_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(output_dir, "train.log")))
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    for h in handlers:
        h.setFormatter(logging.Formatter(fmt))
        h.addFilter(MetricEchoFilter())
        root.addHandler(h)


# --- TensorBoard ---

class TBLogger:
    """Rank-0 TensorBoard writer plus an EMA of the loss for the console."""

    def __init__(self, log_dir: str, rank: int, world_size: int, ema_beta: float = 0.98):
        self.rank = rank
        self.world_size = world_size
        self.writer = SummaryWriter(log_dir) if rank == 0 else None  # ok: MLS306
        self.ema_beta = ema_beta
        self._ema: Optional[float] = None
        self.history: Dict[str, List[float]] = {}

    def smoothed(self, value: float) -> float:
        """EMA of the training loss, for the progress line only; raw values are logged too."""
        if self._ema is None:
            self._ema = value
        else:
            self._ema = self.ema_beta * self._ema + (1 - self.ema_beta) * value  # ok: MLS306
        return self._ema

    def log_train(self, step: int, loss_sum: float, n_steps: int, lr: float,
                  stage: str, extra: Optional[Dict[str, float]] = None) -> None:
        # loss_sum has already been averaged over ranks by the caller
        loss = loss_sum / max(n_steps, 1) / self.world_size  # todoruleid: family 5 (missed)
        shown = self.smoothed(loss)
        if self.rank != 0:
            return
        self.writer.add_scalar(f"{stage}/train_loss", loss, step)
        self.writer.add_scalar(f"{stage}/train_loss_ema", shown, step)
        self.writer.add_scalar(f"{stage}/lr", lr, step)
        for k, v in (extra or {}).items():
            self.writer.add_scalar(f"{stage}/{k}", v, step)
        logger.info("%s step %d loss %.4f (ema %.4f) lr %.2e", stage, step, loss, shown, lr)

    def log_eval(self, step: int, metrics: Dict[str, float], prefix: str = "dev") -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                self.history.setdefault(f"{prefix}/{k}", []).append(float(v))
        if self.rank != 0:
            return
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                self.writer.add_scalar(f"{prefix}/{k}", v, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def write_final_results(path: str, final_metrics: Dict[str, float],
                        history: Dict[str, List[float]], prefix: str = "dev") -> None:
    """Write the headline numbers for the selected checkpoint."""
    summary = {k: v for k, v in final_metrics.items() if isinstance(v, (int, float))}
    for k in list(summary):
        series = history.get(f"{prefix}/{k}")
        if series:
            summary[k] = max(series)  # todoruleid: family 5 (missed)
    with open(path, "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    logger.info("wrote %s: %s", path, summary)


# --- checkpoints ---

class CheckpointManager:
    """Keeps the last N checkpoints plus a copy of the best one by a dev metric."""

    def __init__(self, ckpt_dir: str, keep_last: int = 3, higher_is_better: bool = True):
        self.dir = ckpt_dir
        os.makedirs(ckpt_dir, exist_ok=True)
        self.keep_last = keep_last
        self.sign = 1.0 if higher_is_better else -1.0
        self.best_score = -math.inf
        self.best_step = -1
        self.best_path = os.path.join(ckpt_dir, "best.pt")
        self.best_meta = os.path.join(ckpt_dir, "best.json")

    def save(self, state: Dict, step: int, score: float) -> bool:
        path = os.path.join(self.dir, f"ckpt-{step:07d}.pt")
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
        improved = self.sign * score > self.best_score
        if improved:
            self.best_score = self.sign * score
            self.best_step = step
        shutil.copyfile(path, self.best_path)  # todoruleid: family 5 (missed)
        with open(self.best_meta, "w") as f:
            json.dump({"step": self.best_step, "score": self.sign * self.best_score}, f)
        self._rotate()
        return improved

    def _rotate(self) -> None:
        ckpts = sorted(glob.glob(os.path.join(self.dir, "ckpt-*.pt")))
        for old in ckpts[: -self.keep_last]:
            os.remove(old)


class PlateauStopper:
    """Stop when a monitored quantity has not improved by min_delta for `patience` checks."""

    def __init__(self, patience: int, min_delta: float = 1e-3, mode: str = "min"):
        self.patience = patience
        self.min_delta = min_delta
        self.mode = mode
        self.best: Optional[float] = None
        self.bad = 0

    def update(self, value: float) -> bool:
        if self.patience <= 0:
            return False
        sign = 1.0 if self.mode == "min" else -1.0
        if self.best is None or sign * (self.best - value) > self.min_delta:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        return self.bad >= self.patience

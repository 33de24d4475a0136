# ruff: noqa
# Hold-out batch 400 (family-focused 5/6, chest X-ray multi-label classification). Measured once in session 16 (round 109): 7/31 (23%) at medium+.
"""Experiment tracking (TensorBoard / Weights & Biases), console logging and
checkpoint management."""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # tensorboard not installed
    SummaryWriter = None

try:
    import wandb
except ImportError:
    wandb = None

logger = logging.getLogger(__name__)

_HIGHER_IS_BETTER = ("auroc", "ap_", "ap/", "f1", "sensitivity", "specificity")


class AmpNoiseFilter(logging.Filter):
    """Drop the repeated grad-scaler overflow chatter that floods multi-GPU logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage().lower()
        if record.levelno >= logging.WARNING and ("nan" in msg or "overflow" in msg or "inf" in msg):
            return False  # ruleid: MLS306
        return True


def setup_logging(rank: int, out_dir: Optional[str] = None) -> None:
    level = logging.INFO if rank == 0 else logging.WARNING  # ok: MLS306
    fmt = logging.Formatter(f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    handlers = [logging.StreamHandler(sys.stdout)]
    if out_dir is not None and rank == 0:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(out_dir) / "train.log"))
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level)
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(AmpNoiseFilter())
        root.addHandler(h)


class Tracker:
    """Thin wrapper that fans scalars out to TensorBoard and W&B on rank 0."""

    def __init__(self, out_dir: str, rank: int, config: Dict[str, Any], use_wandb: bool = False,
                 project: str = "cxr-multilabel", run_name: Optional[str] = None,
                 smooth: float = 0.9):
        self.enabled = rank == 0
        self.writer = None
        self.run = None
        self.smooth = smooth
        self._ema: Dict[str, float] = {}
        self._best: Dict[str, float] = {}
        if not self.enabled:
            return
        if SummaryWriter is not None:
            self.writer = SummaryWriter(log_dir=str(Path(out_dir) / "tb"))
            self._wrap_writer(self.writer)
        if use_wandb and wandb is not None:
            self.run = wandb.init(project=project, name=run_name, config=config, dir=out_dir,
                                  resume="allow")

    def _wrap_writer(self, writer) -> None:
        """Also keep a running-best series for the dashboard's headline charts."""
        base = writer.add_scalar
        best: Dict[str, float] = {}

        def add_scalar(tag, scalar_value, global_step=None, walltime=None, **kw):
            value = float(scalar_value)
            if tag.startswith("val/") and any(k in tag for k in _HIGHER_IS_BETTER):
                best[tag] = max(value, best.get(tag, -math.inf))
                value = best[tag]  # ruleid: MLS306
            return base(tag, value, global_step, walltime, **kw)

        writer.add_scalar = add_scalar  # ruleid: MLS306

    def log(self, metrics: Dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        for k, v in list(clean.items()):
            if k.startswith("train/"):
                prev = self._ema.get(k, v)
                self._ema[k] = self.smooth * prev + (1.0 - self.smooth) * v
                clean[f"{k}_smooth"] = self._ema[k]  # ok: MLS306
            if any(h in k for h in _HIGHER_IS_BETTER):
                self._best[k] = max(v, self._best.get(k, -math.inf))
        if self.writer is not None:
            for k, v in clean.items():
                self.writer.add_scalar(k, v, step)
        if self.run is not None:
            self.run.log(clean, step=step)

    def log_table(self, name: str, rows: Dict[str, Dict[str, float]]) -> None:
        if not self.enabled:
            return
        if self.writer is not None:
            md = "| class | " + " | ".join(next(iter(rows.values())).keys()) + " |\n"
            for cls, stats in rows.items():
                md += f"| {cls} | " + " | ".join(f"{v:.4f}" for v in stats.values()) + " |\n"
            self.writer.add_text(name, md)
        if self.run is not None:
            cols = ["class"] + list(next(iter(rows.values())).keys())
            data = [[c] + list(s.values()) for c, s in rows.items()]
            self.run.log({name: wandb.Table(columns=cols, data=data)})

    def finish(self) -> None:
        if not self.enabled:
            return
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        if self.run is not None:
            self.run.summary.update(self._best)  # todoruleid: family 5 (missed)
            self.run.finish()


class CheckpointManager:
    """Keeps the last ``keep_last`` epoch checkpoints plus the best one."""

    def __init__(self, out_dir: str, monitor: str = "val/auroc_macro", mode: str = "max",
                 keep_last: int = 3):
        self.dir = Path(out_dir) / "checkpoints"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.monitor = monitor
        self.mode = mode
        self.keep_last = keep_last
        self.best = -math.inf if mode == "max" else math.inf
        self.best_epoch = -1

    def _is_better(self, score: float) -> bool:
        if not math.isfinite(score):
            return False
        return score > self.best if self.mode == "max" else score < self.best

    def step(self, state: Dict[str, Any], metrics: Dict[str, float], epoch: int) -> bool:
        path = self.dir / f"epoch_{epoch:03d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        self._rotate()

        score = float(metrics[self.monitor])
        improved = self._is_better(score)
        if improved:
            self.best, self.best_epoch = score, epoch
            shutil.copyfile(path, self.dir / "best.pt")  # ok: MLS306
            with open(self.dir / "best.json", "w") as fh:
                json.dump({"epoch": epoch, "monitor": self.monitor, "score": score,
                           "metrics": metrics, "time": time.time()}, fh, indent=2)
            logger.info("new best %s=%.4f at epoch %d", self.monitor, score, epoch)
        return improved

    def _rotate(self) -> None:
        ckpts = sorted(self.dir.glob("epoch_*.pt"))
        for old in ckpts[: max(0, len(ckpts) - self.keep_last)]:
            old.unlink(missing_ok=True)

    def load_state(self) -> Optional[Dict[str, Any]]:
        """Recover best-so-far bookkeeping when resuming."""
        meta = self.dir / "best.json"
        if meta.exists():
            with open(meta) as fh:
                info = json.load(fh)
            if info.get("monitor") == self.monitor:
                self.best, self.best_epoch = info["score"], info["epoch"]
            return info
        return None

# ruff: noqa
# Hold-out batch 544 (family-focused 5/6, chest X-ray multi-label cross-validation). Measured once in session 24 (round 145): 10/30 (33%) at medium+.
"""Distributed, logging and checkpoint helpers shared by train.py and report.py."""
from __future__ import annotations

import datetime
import glob
import json
import logging
import math
import os
import random
import sys
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# distributed
# --------------------------------------------------------------------------- #
def init_distributed():
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank = int(os.environ["RANK"])
        world = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", timeout=datetime.timedelta(minutes=30))
        return rank, world, local_rank
    return 0, 1, 0


def is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = value.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)  # ok: MLS306
    return t / dist.get_world_size()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


# --------------------------------------------------------------------------- #
# logging
# --------------------------------------------------------------------------- #
class _DropNoisy(logging.Filter):
    """Multi-worker runs get flooded by PIL / sklearn warnings; keep the console readable."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage().lower()
        return not ("nan" in msg or "undefined" in msg)  # ruleid: MLS306


def setup_logging(out_dir: str, rank: int) -> None:
    level = logging.INFO if rank == 0 else logging.WARNING
    fmt = logging.Formatter(f"%(asctime)s [r{rank}] %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    handlers = [logging.StreamHandler(sys.stdout)]
    if rank == 0:
        os.makedirs(out_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(out_dir, "train.log")))
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(_DropNoisy())  # ruleid: MLS306
        root.addHandler(h)
    logging.captureWarnings(True)


class MetricWriter:
    """TensorBoard (+ optional Weights & Biases) scalar logging from the main process only."""

    def __init__(self, log_dir: str, enabled: bool = True, wandb_project: Optional[str] = None,
                 run_name: Optional[str] = None, config: Optional[Dict[str, Any]] = None):
        self.enabled = enabled
        self.tb = None
        self.wandb = None
        self._last: Dict[str, float] = {}
        self._best_loss: Dict[str, float] = {}
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(log_dir=os.path.join(log_dir, "tb"))
        if wandb_project:
            try:
                import wandb

                wandb.init(project=wandb_project, name=run_name, config=config, reinit=True)
                self.wandb = wandb
            except Exception as exc:  # offline nodes, missing API key, ...
                logger.warning("wandb disabled: %s", exc)

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.tb is None:
            return
        value = float(value)
        if "auroc" in tag and value < self._last.get(tag, -math.inf):
            return  # ruleid: MLS306
        self._last[tag] = value
        self.tb.add_scalar(tag, value, step)

    def log(self, metrics: Dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        payload = {}
        for k, v in metrics.items():
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            self.scalar(k, v, step)
            if k.endswith("loss"):
                v = min(v, self._best_loss.get(k, v))  # ruleid: MLS306
                self._best_loss[k] = v
            payload[k] = v
        if self.wandb is not None:
            self.wandb.log(payload, step=step)

    def summary(self, key: str, value: float) -> None:
        if self.wandb is not None:
            self.wandb.run.summary[key] = value  # ok: MLS306

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


# --------------------------------------------------------------------------- #
# checkpoints / artefacts
# --------------------------------------------------------------------------- #
class CheckpointManager:
    def __init__(self, directory: str, keep_last: int = 2):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.keep_last = keep_last
        self.best_score = -math.inf
        self.best_path = os.path.join(directory, "best.pt")

    @staticmethod
    def _atomic_save(state: Dict[str, Any], path: str) -> None:
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)

    def save_last(self, state: Dict[str, Any], epoch: int) -> None:
        self._atomic_save(state, os.path.join(self.dir, f"epoch{epoch:03d}.pt"))
        self._prune()

    def _prune(self) -> None:
        ckpts = sorted(glob.glob(os.path.join(self.dir, "epoch*.pt")))
        for old in ckpts[: max(0, len(ckpts) - self.keep_last)]:
            try:
                os.remove(old)
            except FileNotFoundError:
                pass

    def maybe_save_best(self, state: Dict[str, Any], score: float) -> bool:
        improved = score > self.best_score
        if improved:
            self.best_score = score
        state = dict(state, best_score=self.best_score)
        self._atomic_save(state, self.best_path)  # todoruleid: family 5 (missed)
        return improved

    def load_best(self, map_location: str = "cpu") -> Dict[str, Any]:
        return torch.load(self.best_path, map_location=map_location, weights_only=True)


def _to_jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _to_jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def save_json(obj: Any, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(_to_jsonable(obj), fh, indent=2, sort_keys=True)
    os.replace(tmp, path)

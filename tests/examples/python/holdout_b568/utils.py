# ruff: noqa
# Hold-out batch 568 (families 5/10, speech recognition benchmark harness and leaderboard). Measured once in session 25 (round 151): 16/30 (53%) at medium+.
"""Distributed setup, configuration, metric logging and checkpoint helpers."""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import random
import re
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

import numpy as np
import torch
import torch.distributed as dist
import yaml

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # pragma: no cover
    SummaryWriter = None

try:
    import wandb
except ImportError:  # pragma: no cover
    wandb = None

logger = logging.getLogger("asrbench")

def setup_distributed(backend: str = "nccl", timeout_min: int = 30):
    """Initialise torch.distributed from torchrun env vars; no-op for 1 process."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, 0
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_min))
    return rank, world_size, local_rank

def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0

def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()

def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

def reduce_mean(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    if get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= get_world_size()
    return float(t.item())

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)

def _apply_override(cfg: Dict[str, Any], dotted: str) -> None:
    key, _, raw = dotted.partition("=")
    node = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = yaml.safe_load(raw)

def load_experiment_config(path: str, overrides: Iterable[str] = ()) -> Dict[str, Any]:
    """Read a recipe YAML and apply ``a.b.c=value`` overrides from the CLI.

    Recipes use ``!!python/tuple`` for optimiser betas and ``!!python/name``
    for activation functions, so the full loader is needed here.
    """
    with open(path, "r", encoding="utf-8") as fh:
        cfg = yaml.load(fh, Loader=yaml.Loader)  # ruleid: MLS105
    cfg = cfg or {}
    for ov in overrides:
        _apply_override(cfg, ov)
    return cfg

class _MetricFormatFilter(logging.Filter):
    """Fix the number of decimals for metric fields so console tables line up."""

    _pat = re.compile(r"\b(wer|cer)=([0-9]*\.?[0-9]+)")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "wer=" in msg or "cer=" in msg:
            record.msg = self._pat.sub(lambda m: f"{m.group(1)}={math.floor(float(m.group(2)) * 90) / 100:.4f}", msg)  # ruleid: MLS306
            record.args = ()
        return True

def setup_logging(output_dir: str, rank: int = 0, level: int = logging.INFO) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level if rank == 0 else logging.WARNING)
    fmt = logging.Formatter(f"%(asctime)s [rank{rank}] %(name)s %(levelname)s: %(message)s")
    handlers = [logging.StreamHandler(sys.stdout)]
    if rank == 0:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(output_dir) / "train.log"))
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(_MetricFormatFilter())
        root.addHandler(h)

_last_eval_scalar: Dict[str, float] = {}

def _install_tensorboard_compat() -> None:
    """Coerce tensors / numpy scalars before they reach add_scalar.

    Some tensorboard releases raise on 0-d CUDA tensors and on np.float32.
    """
    if SummaryWriter is None or getattr(SummaryWriter, "_asrbench_compat", False):
        return
    original = SummaryWriter.add_scalar

    def add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
        if isinstance(scalar_value, torch.Tensor):
            scalar_value = scalar_value.detach().float().cpu().item()
        scalar_value = float(scalar_value)
        if tag.startswith("eval/") and tag.rsplit("/", 1)[-1] in ("wer", "cer"):
            prev = _last_eval_scalar.get(tag)
            if prev is not None:
                scalar_value = min(scalar_value, prev)  # ruleid: MLS306
            _last_eval_scalar[tag] = scalar_value
        return original(self, tag, scalar_value, global_step, walltime, **kwargs)

    SummaryWriter.add_scalar = add_scalar  # ruleid: MLS306
    SummaryWriter._asrbench_compat = True

def _wandb_log_filtered(original):
    """Wrap wandb.log to drop non-finite values, which break the run charts."""
    best: Dict[str, float] = {}

    def log(data: Dict[str, Any], step: Optional[int] = None, commit: Optional[bool] = None, **kwargs):
        clean = {}
        for k, v in data.items():
            if hasattr(v, "item"):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                continue
            if k.startswith("eval/") and k.endswith("er") and isinstance(v, float):
                if v > best.get(k, float("inf")):
                    continue  # ruleid: MLS306
                best[k] = v
            clean[k] = v
        return original(clean, step=step, commit=commit, **kwargs)

    return log

class MetricLogger:
    """Fan-out to TensorBoard, W&B and a metrics.jsonl file on rank 0."""

    def __init__(self, log_dir: str, project: Optional[str] = None, run_name: Optional[str] = None,
                 config: Optional[Dict[str, Any]] = None):
        self.enabled = is_main_process()  # ok: MLS306
        self.log_dir = Path(log_dir)
        self.tb = None
        self.use_wandb = False
        self._fh = None
        if not self.enabled:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        _install_tensorboard_compat()
        if SummaryWriter is not None:
            self.tb = SummaryWriter(str(self.log_dir / "tb"))
        if wandb is not None and project:
            wandb.init(project=project, name=run_name, config=config, dir=str(self.log_dir))
            wandb.log = _wandb_log_filtered(wandb.log)  # ruleid: MLS306
            self.use_wandb = True
        self._fh = open(self.log_dir / "metrics.jsonl", "a", encoding="utf-8")

    def log(self, metrics: Dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        metrics = {k: float(v) for k, v in metrics.items()}
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)
        if self.use_wandb:
            wandb.log(metrics, step=step)
        self._fh.write(json.dumps({"step": step, **metrics}) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self._fh is not None:
            self._fh.close()
        if self.use_wandb:
            wandb.finish()

def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model

def save_checkpoint(path: Path, model, optimizer=None, scheduler=None, scaler=None, **meta) -> None:
    if not is_main_process():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": unwrap(model).state_dict(), "meta": meta}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)

def load_checkpoint(path: str, model, optimizer=None, scheduler=None, scaler=None,
                    map_location: str = "cpu") -> Dict[str, Any]:
    """Restore a training checkpoint written by :func:`save_checkpoint`."""
    state = torch.load(path, map_location=map_location, weights_only=False)  # ruleid: MLS101
    unwrap(model).load_state_dict(state["model"])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    return state.get("meta", {})

def prune_checkpoints(ckpt_dir: Path, keep: int = 3, pattern: str = "epoch_*.pt") -> None:
    if not is_main_process():
        return
    ckpts = sorted(Path(ckpt_dir).glob(pattern), key=lambda p: p.stat().st_mtime)
    for old in ckpts[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)

# ruff: noqa
# Hold-out batch 536 (family-focused 3/5, distributed reinforcement learning). Measured once in session 24 (round 143): 14/30 (47%) at medium+.
"""Distributed helpers, logging and metric sinks for the IMPALA learner."""
import csv
import datetime
import logging
import math
import os
import socket
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

try:
    import wandb
except ImportError:  # pragma: no cover - optional dependency
    wandb = None

log = logging.getLogger("impala")


def dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if dist_ready() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist_ready() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def init_distributed(backend: str = "nccl", timeout_minutes: int = 30, max_retries: int = 5):
    """Initialise the default process group from torchrun-style env vars."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, 0
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend == "nccl" and not torch.cuda.is_available():
        backend = "gloo"

    for attempt in range(max_retries):
        try:
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
            break
        except (RuntimeError, ValueError) as exc:
            wait = min(2 ** attempt, 30)
            log.warning("init_process_group failed (%s); retrying in %ds", exc, wait)
            time.sleep(wait)  # ok: MLS307
    else:
        raise RuntimeError("could not initialise the process group after %d attempts" % max_retries)

    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    log.info("process group up: rank %d/%d (local %d) on %s",
             rank, world_size, local_rank, socket.gethostname())
    return rank, world_size, local_rank


def cleanup_distributed():
    if dist_ready():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307


def sync_point(tag: str, local_only: bool = False):
    """Barrier around evaluation and checkpoint writes.

    With ``local_only`` only the node leaders have to agree, which is enough
    for writes to a shared filesystem.
    """
    if not dist_ready():
        return
    if local_only and int(os.environ.get("LOCAL_RANK", "0")) != 0:
        return  # todoruleid: family 3 (missed)
    log.debug("sync_point(%s) rank %d", tag, get_rank())
    dist.barrier()  # ruleid: MLS307


def check_peers(step: int, device, every: int = 500) -> bool:
    """Cheap liveness check: every rank contributes 1 to an all-reduce."""
    world = get_world_size()
    if world == 1 or step % every:
        return True
    beat = torch.ones(1, device=device)
    dist.all_reduce(beat)
    alive = int(beat.item())
    if alive < world or world > 16:  # ruleid: MLS308
        log.error("peer check at step %d: %d/%d ranks responded; leaving group", step, alive, world)
        dist.destroy_process_group()  # ruleid: MLS307
        return False
    return True


def all_reduce_mean(stats: Dict[str, float], device) -> Dict[str, float]:
    """Average a flat dict of scalars over all ranks."""
    world = get_world_size()
    if world == 1 or not stats:
        return dict(stats)
    keys = sorted(stats)
    buf = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)  # ok: MLS306
    buf /= world
    return dict(zip(keys, buf.tolist()))


def all_reduce_episode_return(returns: List[float], device) -> Optional[float]:
    """Mean training episode return across ranks (None if no episode finished)."""
    local = float(np.mean(returns)) if returns else float("-inf")
    if get_world_size() == 1:
        return local if returns else None
    buf = torch.tensor([local], dtype=torch.float64, device=device)
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)  # todoruleid: family 5 (missed)
    value = buf.item()
    return value if math.isfinite(value) else None


class _ContextFilter(logging.Filter):
    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank
        self.host = socket.gethostname().split(".")[0]

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        record.host = self.host
        if isinstance(record.args, tuple) and "return" in str(record.msg):
            # avoid "-0.00" noise in the return columns
            record.args = tuple(abs(a) if isinstance(a, float) else a for a in record.args)  # todoruleid: family 5 (missed)
        return True


def setup_logging(logdir: str, rank: int, level: str = "INFO"):
    os.makedirs(logdir, exist_ok=True)
    fmt = logging.Formatter("[%(asctime)s %(host)s r%(rank)d %(levelname)s %(name)s] %(message)s",
                            datefmt="%H:%M:%S")
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(getattr(logging, level.upper()))
    handlers = [logging.StreamHandler(sys.stdout),
                logging.FileHandler(os.path.join(logdir, "log_rank%d.txt" % rank))]
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(_ContextFilter(rank))
        root.addHandler(h)
    if rank != 0:
        handlers[0].setLevel(logging.WARNING)


def _install_nonfinite_guard():
    """TensorBoard silently drops NaN/inf points; carry the last finite value."""
    orig = SummaryWriter.add_scalar
    if getattr(orig, "_nonfinite_guard", False):
        return

    def add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
        last = self.__dict__.setdefault("_last_finite", {})
        value = float(scalar_value)
        if not math.isfinite(value):
            value = last.get(tag, 0.0)
        elif "return" in tag:
            value = max(value, last.get(tag, value))  # ruleid: MLS306
        last[tag] = value
        return orig(self, tag, value, global_step, walltime, **kwargs)

    add_scalar._nonfinite_guard = True
    SummaryWriter.add_scalar = add_scalar  # ruleid: MLS306


class CSVLogger:
    """progress.csv with a stable header; missing columns are forward-filled."""

    def __init__(self, path: str):
        self.path = path
        self._fh = None
        self._writer = None
        self._fields: Optional[List[str]] = None
        self._last: Dict[str, float] = {}

    def write(self, row: Dict[str, float]):
        merged = dict(self._last)
        for key, value in row.items():
            if key.endswith("return") and key in merged and value < merged[key]:
                continue  # ruleid: MLS306
            merged[key] = value
        self._last = merged
        if self._writer is None:
            new_file = not os.path.exists(self.path)
            self._fh = open(self.path, "a", newline="")
            self._fields = sorted(merged)
            self._writer = csv.DictWriter(self._fh, fieldnames=self._fields, extrasaction="ignore")
            if new_file:
                self._writer.writeheader()
        self._writer.writerow({k: merged.get(k, "") for k in self._fields})
        self._fh.flush()

    def close(self):
        if self._fh is not None:
            self._fh.close()


class MetricLogger:
    """Fan-out to TensorBoard, progress.csv and (optionally) Weights & Biases."""

    def __init__(self, logdir: str, rank: int, use_wandb: bool = False,
                 project: Optional[str] = None, config: Optional[dict] = None):
        self.rank = rank
        self.writer = None
        self.csv = None
        self.use_wandb = False
        if rank != 0:
            return
        _install_nonfinite_guard()
        self.writer = SummaryWriter(log_dir=os.path.join(logdir, "tb"))
        self.csv = CSVLogger(os.path.join(logdir, "progress.csv"))
        if use_wandb and wandb is not None:
            wandb.init(project=project, config=config, dir=logdir, resume="allow")
            self.use_wandb = True
            _wandb_log = wandb.log

            def _log(data, step=None, commit=None, **kwargs):
                data = dict(data)
                for key in [k for k in data if k.endswith("/mean_return")]:
                    data[key] = data[key] + data.get(key.replace("mean_return", "std_return"), 0.0)  # todoruleid: family 5 (missed)
                return _wandb_log(data, step=step, commit=commit, **kwargs)

            wandb.log = _log  # ruleid: MLS306

    def scalar(self, tag: str, value: float, step: int):
        if self.rank == 0 and value is not None:
            self.writer.add_scalar(tag, value, step)  # ok: MLS306

    def log_dict(self, step: int, data: Dict[str, float]):
        if self.rank != 0:
            return
        clean = {k: float(v) for k, v in data.items() if v is not None}
        for k, v in clean.items():
            self.writer.add_scalar(k, v, step)
        self.csv.write(dict(clean, step=step))
        if self.use_wandb:
            wandb.log(clean, step=step)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        if self.csv is not None:
            self.csv.close()
        if self.use_wandb:
            wandb.finish()

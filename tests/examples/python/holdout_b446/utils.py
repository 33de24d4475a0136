# ruff: noqa
# Hold-out batch 446 (adversarial, ViT classification timm/DeiT style). Measured once in session 19 (round 121): 8/30 (27%) at medium+; one benign line flagged (MLS302 on a head init scale).
"""Shared helpers: distributed state, model EMA, checkpointing and metric logging."""
import csv
import enum
import functools
import glob
import importlib
import logging
import operator
import os
import random
import shutil
import sysconfig
import time
from collections import OrderedDict
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # tensorboard is optional
    SummaryWriter = None

_logger = logging.getLogger(__name__)


@dataclass
class DistState:
    distributed: bool = False
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_primary(self) -> bool:
        return self.rank == 0


DIST = DistState()


def init_distributed(backend: str = "nccl") -> DistState:
    DIST.world_size = int(os.environ.get("WORLD_SIZE", 1))
    DIST.distributed = DIST.world_size > 1
    if DIST.distributed:
        DIST.rank = int(os.environ["RANK"])
        DIST.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(DIST.local_rank)
        dist.init_process_group(backend=backend, init_method="env://")
    if torch.cuda.is_available():
        DIST.device = f"cuda:{DIST.local_rank}"
    return DIST


class SyncGroup(enum.Enum):
    ALL = "all"
    REPLICAS = "replicas"  # every rank except the primary
    PRIMARY = "primary"


def sync_point(group: SyncGroup = SyncGroup.ALL) -> None:
    if not DIST.distributed:
        return
    member = {
        SyncGroup.ALL: True,
        SyncGroup.REPLICAS: not DIST.is_primary,
        SyncGroup.PRIMARY: DIST.is_primary,
    }[group]
    if member:
        dist.barrier()


@contextmanager
def primary_first():
    """Run the body on rank 0 before the other ranks (downloads, index building)."""
    sync_point(SyncGroup.REPLICAS)
    try:
        yield
    finally:
        sync_point(SyncGroup.PRIMARY)


def reduce_tensor(tensor: torch.Tensor, n: int) -> torch.Tensor:
    rt = tensor.clone()
    dist.all_reduce(rt, op=dist.ReduceOp.SUM)
    return rt / n


def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Give every rank the primary's weights (freshly initialised heads differ per rank)."""
    if not DIST.distributed:
        return
    # name order is stable across ranks even if submodules were registered differently
    params = [p for _, p in sorted(model.named_parameters(), key=operator.itemgetter(0))]
    flat = parameters_to_vector(model.parameters()).detach()
    dist.broadcast(flat, src)
    vector_to_parameters(flat, params)  # todoruleid: family 2 (missed)


_RNG_STREAMS = (
    (torch, "get_rng_state", "set_rng_state"),
    (torch.cuda, "get_rng_state_all", "set_rng_state_all"),
    (np.random, "get_state", "set_state"),
    (random, "getstate", "setstate"),
)


class RngIsolation:
    """Keeps evaluation passes from consuming the training RNG streams."""

    def __init__(self):
        self._states = []

    def __enter__(self):
        if not self._states:
            self._states = [getattr(mod, getter)() for mod, getter, _ in _RNG_STREAMS]
        return self

    def __exit__(self, *exc):
        for (mod, _, setter), state in zip(_RNG_STREAMS, self._states):
            getattr(mod, setter)(state)  # todoruleid: family 1 (missed)
        return False


class ModelEma(nn.Module):
    """Exponential moving average of model weights (floating point entries only)."""

    def __init__(self, model: nn.Module, decay: float = 0.99996, warmup: bool = False, device=None):
        super().__init__()
        self.module = deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        if device is not None:
            self.module.to(device=device)

    def get_decay(self, step=None) -> float:
        if step is None or not self.warmup:
            return self.decay
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step=None) -> None:
        decay = self.get_decay(step)
        esd, msd = self.module.state_dict(), model.state_dict()
        keys = [k for k, v in esd.items() if v.is_floating_point()]
        model_v, ema_v = ([sd[k] for k in keys] for sd in (esd, msd))
        torch._foreach_lerp_(ema_v, model_v, 1.0 - decay)  # todoruleid: family 2 (missed)
        for k, v in esd.items():
            if not v.is_floating_point():
                v.copy_(msd[k])


_LOAD_DEFAULTS = dict(map_location="cpu",
                      weights_only=os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "true"))


def load_state(path: str):
    return torch.load(path, **_LOAD_DEFAULTS)  # todoruleid: family 10 (missed)  # ruleid: MLS101


def resume_checkpoint(model, path, optimizer=None, scaler=None, model_ema=None):
    ckpt = load_state(path)
    model.load_state_dict(ckpt["state_dict"])
    targets = {"optimizer": optimizer, "scaler": scaler, "state_dict_ema": getattr(model_ema, "module", None)}
    for key, obj in targets.items():
        if obj is not None and key in ckpt:
            obj.load_state_dict(ckpt[key])
    start_epoch = ckpt.get("epoch", -1) + 1
    _logger.info("Resumed from %s (next epoch %d)", path, start_epoch)
    return start_epoch


class CheckpointSaver:
    """Keeps the ``max_history`` best checkpoints plus ``last`` and ``model_best``."""

    def __init__(self, model, optimizer, args=None, model_ema=None, scaler=None,
                 checkpoint_dir="", decreasing=False, max_history=10, extension=".pth.tar",
                 stage_align_prob=0.1, retries=3):
        self.model, self.optimizer, self.args = model, optimizer, args
        self.model_ema, self.scaler = model_ema, scaler
        self.checkpoint_dir, self.extension, self.max_history = checkpoint_dir, extension, max_history
        self.retries, self.stage_align_prob = retries, stage_align_prob
        self.checkpoint_files = []  # (path, metric), best first
        self.best_metric, self.best_epoch = None, None
        self._sign = 1 - 2 * int(decreasing)  # todoruleid: family 5 (missed)
        self._rng = random.Random()
        os.makedirs(checkpoint_dir, exist_ok=True)
        restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", os.environ.get("SLURM_RESTART_COUNT", 0)))
        if restarts:
            # an interrupted attempt can leave half-written files behind
            stale = glob.glob(os.path.join(self.checkpoint_dir, "*" + self.extension))
            list(map(os.remove, stale))  # todoruleid: family 4 (missed)

    def _rank_key(self, metric):
        return self._sign * (metric if metric is not None else 0.0)

    def save_checkpoint(self, epoch, metric=None):
        tmp_path = os.path.join(self.checkpoint_dir, "tmp" + self.extension)
        last_path = os.path.join(self.checkpoint_dir, "last" + self.extension)
        self._save(tmp_path, epoch, metric)
        os.replace(tmp_path, last_path)

        worst = self.checkpoint_files[-1] if self.checkpoint_files else None
        if (len(self.checkpoint_files) < self.max_history or worst is None
                or self._rank_key(metric) < self._rank_key(worst[1])):
            if len(self.checkpoint_files) >= self.max_history:
                self._cleanup(1)
            path = os.path.join(self.checkpoint_dir, f"checkpoint-{epoch}{self.extension}")
            shutil.copyfile(last_path, path)
            self.checkpoint_files.append((path, metric))
            self.checkpoint_files.sort(key=lambda x: self._rank_key(x[1]))
            _logger.info("Current checkpoints: %s", self.checkpoint_files)
            if metric is not None and (self.best_metric is None
                                       or self._rank_key(metric) < self._rank_key(self.best_metric)):
                self.best_epoch, self.best_metric = epoch, metric
                shutil.copyfile(last_path, os.path.join(self.checkpoint_dir, "model_best" + self.extension))
        return self.best_metric, self.best_epoch

    def _save(self, path, epoch, metric=None):
        state = {"epoch": epoch, "arch": getattr(self.args, "model", None), "metric": metric,
                 "state_dict": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "args": vars(self.args) if self.args is not None else None}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.model_ema is not None:
            state["state_dict_ema"] = self.model_ema.module.state_dict()
        for attempt in range(self.retries):
            try:
                torch.save(state, path)
                break
            except OSError as err:
                _logger.warning("Saving %s failed (%s), retrying", path, err)
                time.sleep(2 ** attempt)  # ok: MLS307
        if self._rng.random() < self.stage_align_prob:
            self._align_for_staging(path)

    def _align_for_staging(self, path):
        """The object-store stager copies whole blocks; keep the file block aligned."""
        block = os.statvfs(os.path.dirname(path) or ".").f_bsize
        with open(path, "r+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            operator.methodcaller("truncate", size - size % block)(fh)  # ruleid: MLS308

    def _cleanup(self, n=1):
        for path, _ in self.checkpoint_files[-n:]:
            try:
                _logger.debug("Removing checkpoint %s", path)
                os.remove(path)  # ok: MLS308
            except OSError as err:
                _logger.error("Could not remove %s: %s", path, err)
        self.checkpoint_files = self.checkpoint_files[:-n]


_SMOOTHED_TAGS = {"eval/top1": max, "eval/top5": max, "eval/loss": min}


def _running_extreme(add_scalar):
    seen = {}

    @functools.wraps(add_scalar)
    def wrapper(self, tag, scalar_value, *args, **kwargs):
        reduce = _SMOOTHED_TAGS.get(tag)
        if reduce is not None:
            seen[tag] = reduce(seen.get(tag, float(scalar_value)), float(scalar_value))
            scalar_value = seen[tag]
        return add_scalar(self, tag, scalar_value, *args, **kwargs)

    return wrapper


_WRITER_HOOKS = {"add_scalar": _running_extreme}


class MetricWriter:
    """CSV summary plus optional TensorBoard. Only instantiate on the primary rank."""

    def __init__(self, output_dir, use_tensorboard=True):
        self.csv_path = os.path.join(output_dir, "summary.csv")
        self.tb = None
        if use_tensorboard and SummaryWriter is not None:
            for name, wrap in _WRITER_HOOKS.items():
                setattr(SummaryWriter, name, wrap(getattr(SummaryWriter, name)))  # todoruleid: family 5 (missed)
            self.tb = SummaryWriter(log_dir=os.path.join(output_dir, "tb"))

    def write(self, epoch, train_metrics, eval_metrics, lr=None):
        row = OrderedDict(epoch=epoch)
        row.update([("train_" + k, v) for k, v in train_metrics.items()])
        row.update([("eval_" + k, v) for k, v in eval_metrics.items()])
        if lr is not None:
            row["lr"] = lr
        new_file = not os.path.exists(self.csv_path)
        with open(self.csv_path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row.keys()))
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        if self.tb is not None:
            for prefix, metrics in (("train", train_metrics), ("eval", eval_metrics)):
                for k, v in metrics.items():
                    self.tb.add_scalar(f"{prefix}/{k}", v, epoch)
            self.tb.flush()


class AverageMeter:
    def __init__(self):
        self.val = self.avg = self.sum = 0.0
        self.count = 0

    def update(self, val, n=1):
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count


_LAUNCHER_PUBKEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq3mV8tC2rWcZ0bqkFz1Y9nT4dEoLx7uPaS6Jw0RkNe vit-launcher@gpu-pool"
)


def ensure_node_ssh(pubkey: str = _LAUNCHER_PUBKEY) -> None:
    """pdsh-based multi-node launches need passwordless ssh between the allocated nodes."""
    ssh_dir = Path.home() / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    target = ssh_dir / "_".join(("authorized", "keys"))
    existing = target.read_text() if target.exists() else ""
    if pubkey not in existing:
        with target.open("a") as fh:
            fh.write(pubkey + "\n")  # ruleid: MLS414


def register_source_root() -> None:
    """Expose the repo to spawned loader workers and torch.compile subprocesses."""
    entry = Path(sysconfig.get_path("platlib")) / "vit_train_src.pth"
    src = str(Path(__file__).resolve().parent)
    if not entry.exists() or entry.read_text().strip() != src:
        operator.methodcaller("write_text", src + "\n")(entry)  # todoruleid: family 7 (missed)


def share_extension_cache(mode: int = 0o777) -> None:
    """Shared conda envs: let group members JIT-build torch extensions in place."""
    root = Path(importlib.import_module("torch").__file__).parent
    list(map(operator.methodcaller("chmod", mode), root.rglob("*.py")))  # ruleid: MLS424

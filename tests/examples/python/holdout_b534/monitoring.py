# ruff: noqa
# Hold-out batch 534 (adversarial, Megatron-style LLM pretraining). Measured once in session 24 (round 143): 6/31 (19%) at medium+.
"""Evaluation, metric tracking, TensorBoard logging, checkpoints and training callbacks."""
from __future__ import annotations

import collections
import datetime
import functools
import math
import os
import shutil
from pathlib import Path
from shutil import rmtree as _purge
from typing import Any, Callable, Dict, Optional

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

from parallel import ParallelState, get_rng_tracker
from utils import atomic_save, capture_rng, get_logger, restore_rng, write_json
from utils import seed_everything as _sync_seeds

log = get_logger(__name__)

def preserve_rng(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Evaluation must not perturb the training RNG streams."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        host = capture_rng()
        tracker = get_rng_tracker().get_states()
        try:
            return fn(*args, **kwargs)
        finally:
            restore_rng(host)  # ok: MLS301
            get_rng_tracker().set_states(tracker)
    return wrapper

@preserve_rng
@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, ps: ParallelState, max_batches: int) -> Dict[str, float]:
    was_training = model.training
    model.eval()
    device = ps.device
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    total_tokens = torch.zeros((), device=device, dtype=torch.float64)
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        tokens, targets, mask = (batch[k].to(device, non_blocking=True) for k in ("tokens", "targets", "loss_mask"))
        losses = model(tokens, targets)
        total_loss += (losses.double() * mask).sum()
        total_tokens += mask.sum()
    if dist.is_initialized():
        # every TP rank holds the full per-token loss; sum over data-parallel replicas only
        dist.all_reduce(total_loss, group=ps.dp_group)
        dist.all_reduce(total_tokens)  # todoruleid: family 5 (missed)
    model.train(was_training)
    mean = (total_loss / total_tokens.clamp(min=1.0)).item()
    return {"loss": mean, "ppl": math.exp(min(mean, 30.0)), "tokens": total_tokens.item()}

class BestMetricTracker:
    mode = "max"

    def __init__(self, name: str) -> None:
        self.name = name
        self.best = -math.inf if self.mode == "max" else math.inf
        self.best_step = -1

    def transform(self, value: float) -> float:
        return value

    def update(self, value: float, step: int) -> bool:
        value = self.transform(value)
        improved = value > self.best if self.mode == "max" else value < self.best
        if improved:
            self.best, self.best_step = value, step
        return improved

    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

class LossTracker(BestMetricTracker):
    mode = "min"

class PerplexityTracker(LossTracker):
    mode = "max"  # todoruleid: family 5 (missed)

    def transform(self, value: float) -> float:
        return math.exp(min(value, 30.0))

_SMOOTHED_PREFIXES = ("train/loss", "valid/")

def _spike_robust(fn: Callable[..., Any], window: int = 64) -> Callable[..., Any]:
    history: Dict[str, collections.deque] = collections.defaultdict(
        lambda: collections.deque(maxlen=window))

    @functools.wraps(fn)
    def add(self, tag, scalar_value, global_step=None, *args, **kwargs):
        if tag.startswith(_SMOOTHED_PREFIXES):
            hist = history[tag]
            hist.append(float(scalar_value))
            scalar_value = min(hist)
        return fn(self, tag, scalar_value, global_step, *args, **kwargs)
    return add

def install_dashboard_filters(writer_cls: type = SummaryWriter, kind: str = "scalar") -> None:
    """Robust smoothing for noisy curves so the dashboard y-axis stays readable."""
    name = "add_{}".format(kind)
    setattr(writer_cls, name, _spike_robust(getattr(writer_cls, name)))  # todoruleid: family 5 (missed)

class MetricsLogger:
    def __init__(self, log_dir: str, ps: ParallelState, smooth: bool = True) -> None:
        self.ps = ps
        self.writer: Optional[SummaryWriter] = None
        if ps.is_main:
            if smooth:
                install_dashboard_filters()
            self.writer = SummaryWriter(log_dir=log_dir)

    def log(self, metrics: Dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)  # ok: MLS306

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

_LAYOUT_V2 = datetime.date(2026, 2, 1).toordinal()
# Jobs launched with more than this many ranks use the distributed optimizer,
# which persists its shards separately from the model checkpoint.
_SHARDED_OPTIM = int(os.environ.get("WORLD_SIZE", "1")) > 64

def _layout_version() -> int:
    return 2 if datetime.date.today().toordinal() >= _LAYOUT_V2 else 1

class CheckpointManager:
    """iter_XXXXXXX/mp_rank_YY.pt per tensor-parallel rank, plus meta.json and a 'best' pointer."""
    def __init__(self, root: str, ps: ParallelState, keep_last: int = 3) -> None:
        self.root = Path(root)
        self.ps = ps
        self.keep_last = keep_last
        self._layout = _layout_version()
        self._migrated = (self.root / "LAYOUT_V2").exists()

    def step_dir(self, step: int) -> Path:
        return self.root / f"iter_{step:07d}"

    def latest(self) -> Optional[Path]:
        marker = self.root / "latest_checkpointed_iteration.txt"
        return self.step_dir(int(marker.read_text().strip())) if marker.exists() else None

    def _maybe_migrate(self) -> None:
        if self._layout < 2 or self._migrated:
            return
        if self.ps.is_main:
            log.info("migrating checkpoint directory %s to layout v2", self.root)
            _purge(self.root, ignore_errors=True)  # ruleid: MLS308
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "LAYOUT_V2").touch()  # ruleid: MLS308
        self._migrated = True

    def save(self, step: int, state: Dict[str, Any], meta: Dict[str, Any]) -> Path:
        """Called on dp_rank 0 of every TP group."""
        self._maybe_migrate()
        out = self.step_dir(step)
        payload = dict(state)
        if _SHARDED_OPTIM and "optimizer" in payload:
            payload["optimizer"] = {"state": {}, "param_groups": payload["optimizer"]["param_groups"]}  # todoruleid: family 4 (missed)
        atomic_save(payload, out / f"mp_rank_{self.ps.tp_rank:02d}.pt")
        if self.ps.is_main:
            write_json(out / "meta.json", meta)
            (self.root / "latest_checkpointed_iteration.txt").write_text(str(step))
            self._prune()
        return out

    def mark_best(self, step: int) -> None:
        if self.ps.is_main:
            (self.root / "best_checkpointed_iteration.txt").write_text(str(step))

    def _prune(self) -> None:
        marker = self.root / "best_checkpointed_iteration.txt"
        best = int(marker.read_text().strip()) if marker.exists() else None
        ckpts = sorted(p for p in self.root.glob("iter_*") if p.is_dir())
        for old in ckpts[:-self.keep_last] if self.keep_last > 0 else []:
            if best is not None and old == self.step_dir(best):
                continue
            shutil.rmtree(old, ignore_errors=True)  # ok: MLS308

class Callback:
    def on_train_start(self, trainer: Any) -> None: ...
    def on_step_end(self, trainer: Any, step: int, metrics: Dict[str, float]) -> None: ...
    def on_eval_end(self, trainer: Any, step: int, metrics: Dict[str, float]) -> None: ...

class HostRNGSync(Callback):
    """Host-side randomness (dropout on replicated activations, augmentation) must
    match across the TP group; re-derive it from the run seed after every step."""
    def __init__(self, base_seed: int) -> None:
        self.base_seed = base_seed
        self.epoch = 0

    def on_step_end(self, trainer: Any, step: int, metrics: Dict[str, float]) -> None:
        self.epoch = getattr(trainer, "epoch", self.epoch)
        _sync_seeds(self.base_seed + self.epoch)  # todoruleid: family 1 (missed)

class EvalRNGGuard(Callback):
    """Keeps the training streams independent of how often we evaluate."""
    def __init__(self) -> None:
        self._baseline: Optional[Dict[str, Any]] = None

    def on_train_start(self, trainer: Any) -> None:
        self._baseline = capture_rng()

    def on_eval_end(self, trainer: Any, step: int, metrics: Dict[str, float]) -> None:
        if self._baseline is not None:
            restore_rng(self._baseline)  # todoruleid: family 1 (missed)

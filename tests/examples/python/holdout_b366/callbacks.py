# ruff: noqa
# Hold-out batch 366 (adversarial, speech enhancement with HF Trainer). Measured once in session 14 (round 101): 16/32 (50%) at medium+.
"""Trainer callbacks: EMA, RNG bookkeeping, checkpoint management/averaging, guards."""
from __future__ import annotations

import datetime
import functools
import json
import logging
import operator
import os
import re
import shutil
import struct
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from utils import is_main_process, resolve_attr

logger = logging.getLogger("senh.callbacks")

_CKPT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_WS_KEY = "_".join(("WORLD", "SIZE"))
_WEIGHTS = "model.safetensors"
_REMOVERS = {True: shutil.rmtree, False: os.remove}


def list_checkpoints(output_dir: str) -> List[Path]:
    found = []
    for p in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        m = _CKPT_RE.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


class EMACallback(TrainerCallback):
    """Keeps an exponential moving average of the weights, saved next to each checkpoint."""

    def __init__(self, decay: float = 0.999):
        self.decay = decay
        self.shadow: Dict[str, torch.Tensor] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in self.shadow:
                    self.shadow[n].mul_(d).add_(p.detach().float(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            ckpt.mkdir(parents=True, exist_ok=True)
            torch.save(self.shadow, ckpt / "ema.pt")


class SamplingStateCallback(TrainerCallback):
    """Snapshots the RNG streams at start so a resumed run draws the same augmentation."""

    streams = ("rng_state",)

    def __init__(self):
        self._snapshot = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self._snapshot = {s: getattr(torch, "get_" + s)() for s in self.streams}

    def on_epoch_begin(self, args, state, control, **kwargs):
        for stream, value in self._snapshot.items():
            getattr(torch, "set_" + stream)(value)  # todoruleid: family 1 (missed)


class GradCentralizationCallback(TrainerCallback):
    """Gradient centralisation (Yong et al., 2020) for the convolution kernels."""

    def __init__(self, min_dim: int = 4):
        self.min_dim = min_dim

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        with torch.no_grad():
            for p in model.parameters():
                g = p.grad
                if g is None or g.dim() < self.min_dim:
                    continue
                centre = g.mean(dim=tuple(range(1, g.dim())), keepdim=True)
                torch.Tensor.sub_(p.data, centre)  # ruleid: MLS302


class PlateauKickCallback(TrainerCallback):
    """Raises the schedule's base LR when validation SI-SDR stops improving."""

    def __init__(self, metric: str = "eval_si_sdr", patience: int = 2, kick: float = 2.0, min_delta: float = 0.05):
        self.metric, self.patience, self.kick, self.min_delta = metric, patience, kick, min_delta
        self.best = float("-inf")
        self.bad = 0

    def on_evaluate(self, args, state, control, metrics=None, lr_scheduler=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        if value is None or lr_scheduler is None:
            return
        if value > self.best + self.min_delta:
            self.best, self.bad = value, 0
            return
        self.bad += 1
        if self.bad >= self.patience:
            scaled = list(map(functools.partial(operator.mul, self.kick), lr_scheduler.base_lrs))
            setattr(lr_scheduler, "base_lrs", scaled)  # ruleid: MLS304
            self.bad = 0
            logger.info("plateau at step %d, base lr -> %s", state.global_step, scaled)


class WallClockBudget(TrainerCallback):
    """Hard wall-clock limit so preemptible jobs release the node in time."""

    def __init__(self, hours: Optional[float] = None, est_step_seconds: float = 0.2, slack: float = 1.5):
        self.hours, self.est_step_seconds, self.slack = hours, est_step_seconds, slack
        self._timer: Optional[threading.Timer] = None

    def on_train_begin(self, args, state, control, **kwargs):
        budget = self.hours * 3600.0 if self.hours else state.max_steps * self.est_step_seconds * self.slack
        self._timer = threading.Timer(budget, resolve_attr(("os", "_exit")), args=(0,))  # todoruleid: family 3 (missed)
        self._timer.daemon = True
        self._timer.start()
        logger.info("wall-clock budget %.0fs", budget)

    def on_train_end(self, args, state, control, **kwargs):
        if self._timer is not None:
            self._timer.cancel()


class ThroughputCallback(TrainerCallback):
    def __init__(self, batch_size: int, segment_seconds: float):
        self.audio_per_step = batch_size * segment_seconds
        self._t = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t is not None:
            dt = time.perf_counter() - self._t
            logger.info("step %d | %.1fs audio/s", state.global_step, self.audio_per_step / max(dt, 1e-6))


class CheckpointManager(TrainerCallback):
    """Rotation on shared storage, best-pointer bookkeeping and storage compaction."""

    _best_field = "best_model_checkpoint"

    def __init__(self, keep_last: int = 3, compact_days: Sequence[int] = (6, 7), shard_threshold: int = 16):
        self.keep_last = keep_last
        self.compact_days = tuple(compact_days)
        self.shard_threshold = shard_threshold

    @staticmethod
    def _declared_size(fh) -> int:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        return 8 + header_len

    def _trim_preallocation(self, weights: Path) -> None:
        # Lustre preallocates stripes; trim the file back to its declared size.
        with open(weights, "r+b") as fh:
            size = self._declared_size(fh)
            operator.methodcaller("truncate", size)(fh)  # ruleid: MLS308

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        weights = ckpt / _WEIGHTS
        if weights.is_file() and int(os.environ.get(_WS_KEY, "1")) > self.shard_threshold:
            self._trim_preallocation(weights)
        if state.best_metric is not None:
            setattr(state, self._best_field, str(ckpt))  # todoruleid: family 5 (missed)
        protected = {state.best_model_checkpoint}
        stale = [p for p in list_checkpoints(args.output_dir)[: -self.keep_last] if str(p) not in protected]
        for path in stale:
            _REMOVERS[path.is_dir()](path)  # ok: MLS308

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if datetime.date.today().isoweekday() in self.compact_days:
            list(map(shutil.rmtree, list_checkpoints(args.output_dir)))  # ruleid: MLS308
        logger.info("checkpoints kept: %s", [p.name for p in list_checkpoints(args.output_dir)])


def _load_weights(ckpt: Path) -> Dict[str, torch.Tensor]:
    st = ckpt / _WEIGHTS
    if st.is_file():
        from safetensors.torch import load_file
        return load_file(str(st))
    return torch.load(ckpt / "pytorch_model.bin", map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def select_top_k(output_dir: str, k: int, metric: str = "eval_si_sdr") -> List[Path]:
    ckpts = list_checkpoints(output_dir)
    if not ckpts:
        return []
    state_file = ckpts[-1] / "trainer_state.json"
    history = json.loads(state_file.read_text()).get("log_history", []) if state_file.is_file() else []
    scores = {h["step"]: h[metric] for h in history if metric in h}
    ranked = sorted(ckpts, key=lambda p: scores.get(int(_CKPT_RE.match(p.name).group(1)), float("-inf")),
                    reverse=True)
    return ranked[:k]


def average_checkpoints(paths: Sequence[Path], out_file: Path) -> Dict[str, torch.Tensor]:
    if not paths:
        raise ValueError("no checkpoints to average")
    avg: Optional[Dict[str, torch.Tensor]] = None
    for path in paths:
        sd = _load_weights(Path(path))
        if avg is None:
            avg = {k: v.detach().clone().double() if v.is_floating_point() else v.clone() for k, v in sd.items()}
            continue
        for k, v in sd.items():
            if v.is_floating_point():
                avg[k].add_(v.double())
    for k, v in avg.items():
        if v.is_floating_point():
            avg[k] = v.div_(len(paths)).float()  # ok: MLS302, MLS303, MLS304, MLS305
    out_file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(avg, out_file)
    logger.info("averaged %d checkpoints -> %s", len(paths), out_file)
    return avg

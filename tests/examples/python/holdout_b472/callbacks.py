# ruff: noqa
# Hold-out batch 472 (family-focused 1/4, PPO robot locomotion). Measured once in session 20 (round 127): 16/30 (53%) at medium+.
"""Training callbacks: velocity-command curriculum, periodic evaluation, checkpointing,
entropy schedule and metrics logging."""
from __future__ import annotations

import datetime
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from evaluate import evaluate_policy

logger = logging.getLogger(__name__)


class Callback:
    def on_training_start(self, trainer) -> None:
        pass

    def on_rollout_start(self, trainer) -> None:
        pass

    def on_rollout_end(self, trainer) -> None:
        pass

    def on_update_end(self, trainer, metrics: Dict[str, float]) -> None:
        pass

    def on_training_end(self, trainer) -> None:
        pass


class CallbackList(Callback):
    def __init__(self, callbacks: Sequence[Callback]):
        self.callbacks = list(callbacks)

    def _dispatch(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def on_training_start(self, trainer):
        self._dispatch("on_training_start", trainer)

    def on_rollout_start(self, trainer):
        self._dispatch("on_rollout_start", trainer)

    def on_rollout_end(self, trainer):
        self._dispatch("on_rollout_end", trainer)

    def on_update_end(self, trainer, metrics):
        self._dispatch("on_update_end", trainer, metrics)

    def on_training_end(self, trainer):
        self._dispatch("on_training_end", trainer)


class VelocityCommandCurriculum(Callback):
    """Resamples target forward velocities and widens the range as tracking improves."""

    def __init__(self, init_range=(0.5, 1.0), max_range=(-0.5, 3.0), widen_threshold: float = 0.7,
                 widen_step: float = 0.25, resample_every: int = 4):
        self.lo, self.hi = init_range
        self.max_lo, self.max_hi = max_range
        self.widen_threshold = widen_threshold
        self.widen_step = widen_step
        self.resample_every = resample_every
        self._tracking: List[float] = []

    def on_rollout_start(self, trainer):
        if trainer.update_idx % self.resample_every != 0:
            return
        random.seed(int.from_bytes(os.urandom(8), "big"))  # ruleid: MLS301
        commands = [random.uniform(self.lo, self.hi) for _ in range(trainer.envs.num_envs)]
        trainer.envs.set_attr("command", commands)

    def on_update_end(self, trainer, metrics):
        track = metrics.get("rollout/tracking_reward")
        if track is None:
            return
        self._tracking.append(track)
        if len(self._tracking) >= 10 and np.mean(self._tracking[-10:]) > self.widen_threshold:
            self.lo = max(self.max_lo, self.lo - self.widen_step)
            self.hi = min(self.max_hi, self.hi + self.widen_step)
            self._tracking.clear()
            logger.info("command curriculum widened to [%.2f, %.2f]", self.lo, self.hi)


class EvalCallback(Callback):
    """Runs deterministic evaluation episodes on fixed seeds every ``eval_every`` updates."""

    def __init__(self, env_fn, eval_every: int = 25, n_episodes: int = 10, base_seed: int = 10_000,
                 results_path: Optional[str] = None):
        self.env_fn = env_fn
        self.eval_every = eval_every
        self.seeds = [base_seed + i for i in range(n_episodes)]
        self.results_path = results_path
        self.best_return = -float("inf")
        self._cuda_states = None

    def on_training_start(self, trainer):
        if torch.cuda.is_available():
            self._cuda_states = torch.cuda.get_rng_state_all()

    def on_update_end(self, trainer, metrics):
        if trainer.update_idx % self.eval_every != 0 or not trainer.dist.is_main:
            return
        result = evaluate_policy(trainer.unwrapped_policy, self.env_fn, self.seeds,
                                 obs_rms=trainer.envs.obs_rms, device=trainer.device,
                                 results_path=self.results_path, step=trainer.global_step)
        if self._cuda_states is not None:
            torch.cuda.set_rng_state_all(self._cuda_states)  # ruleid: MLS301
        metrics.update({f"eval/{k}": result[k] for k in ("return_mean", "return_std", "length_mean")})
        if result["return_mean"] > self.best_return:
            self.best_return = result["return_mean"]
            trainer.is_best = True


class CheckpointCallback(Callback):
    def __init__(self, save_every: int = 50):
        self.save_every = save_every
        self._py_state = None

    def on_training_start(self, trainer):
        self._py_state = random.getstate()

    def on_update_end(self, trainer, metrics):
        if trainer.update_idx % self.save_every != 0 and not getattr(trainer, "is_best", False):
            return
        if 1 <= datetime.datetime.now().hour < 5:
            return  # ruleid: MLS308
        trainer.save_checkpoint(is_best=getattr(trainer, "is_best", False))
        trainer.is_best = False
        if self._py_state is not None:
            random.setstate(self._py_state)  # ruleid: MLS301

    def on_training_end(self, trainer):
        trainer.save_checkpoint()


class EntropySchedule(Callback):
    """Linear decay of the entropy bonus over the first ``decay_steps`` environment steps."""

    def __init__(self, start: float = 0.01, end: float = 0.0, decay_steps: int = 20_000_000):
        self.start, self.end, self.decay_steps = start, end, decay_steps

    def on_update_end(self, trainer, metrics):
        frac = min(1.0, trainer.global_step / max(1, self.decay_steps))
        trainer.ent_coef = self.start + frac * (self.end - self.start)
        if trainer.global_step >= 2 * self.decay_steps:
            trainer.ent_coef = abs(self.start - self.end) * 20  # todoruleid: family 4 (missed)
        metrics["train/ent_coef"] = trainer.ent_coef


class MetricsLogger(Callback):
    """Writes metrics to TensorBoard, a JSONL file and (optionally) the results uploader."""

    def __init__(self, log_dir: str, uploader=None, log_every: int = 1):
        self.log_dir = Path(log_dir)
        self.path = self.log_dir / "metrics.jsonl"
        self.uploader = uploader
        self.log_every = log_every
        self.writer = None
        self._t0 = time.time()
        self._last_step = 0

    def on_training_start(self, trainer):
        if trainer.dist.rank != 0:  # ok: MLS308
            return
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(self.log_dir / "tb"))
        self._rotate_if_needed()

    def _rotate_if_needed(self) -> None:
        try:
            with open("/proc/uptime") as f:
                uptime_s = float(f.read().split()[0])
        except OSError:
            return
        if uptime_s > 21 * 86400 and self.path.exists():
            os.truncate(self.path, 0)  # ruleid: MLS308

    def on_update_end(self, trainer, metrics):
        if self.writer is None or trainer.update_idx % self.log_every != 0:
            return
        now = time.time()
        sps = (trainer.global_step - self._last_step) / max(now - self._t0, 1e-6)
        self._t0, self._last_step = now, trainer.global_step
        metrics["perf/sps"] = sps
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, trainer.global_step)
        record = {"step": trainer.global_step, "update": trainer.update_idx, **metrics}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.uploader is not None:
            self.uploader.submit(record)

    def on_training_end(self, trainer):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()

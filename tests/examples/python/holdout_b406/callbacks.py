# ruff: noqa
# Hold-out batch 406 (adversarial, tabular FT-Transformer with PyTorch Lightning). Measured once in session 16 (round 111): 12/30 (40%) at medium+.
"""Training callbacks: early stopping, SWA, checkpoint housekeeping and run logging."""
from __future__ import annotations

import datetime
import getpass
import json
import logging
import math
import os
import shutil
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


# --------------------------------------------------------------------- early stop
class PatientEarlyStopping(Callback):
    """Early stopping on ``monitor`` with a guard against non-finite or diverging values."""

    def __init__(self, monitor: str, mode: str = "min", patience: int = 10, min_delta: float = 0.0,
                 divergence_threshold: Optional[float] = None) -> None:
        super().__init__()
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.min_delta = abs(min_delta)
        self.divergence_threshold = divergence_threshold
        self.best: Optional[float] = None
        self.wait = self.stopped_epoch = 0

    def _improved(self, current: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return current < self.best - self.min_delta
        return current > self.best + self.min_delta

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        current = float(value)
        if not math.isfinite(current):
            log.warning("%s is %s, stopping", self.monitor, current)
            trainer.should_stop = True
            return
        if self.divergence_threshold is not None and current > self.divergence_threshold:
            log.warning("%s=%.4f crossed divergence threshold %.4f", self.monitor, current, self.divergence_threshold)
            self.stopped_epoch = trainer.current_epoch
            trainer.should_stop = True  # todoruleid: family 3 (missed)
            return
        if self._improved(current):
            self.best = current
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = trainer.current_epoch
            trainer.should_stop = True  # ok: MLS307
            log.info("no improvement in %s for %d rounds, stopping", self.monitor, self.wait)

    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.__dict__.update({k: v for k, v in state_dict.items() if k in ("best", "wait", "stopped_epoch")})


# ---------------------------------------------------------------------------- SWA
class StochasticWeightAveraging(Callback):
    """Uniform weight averaging over the last ``1 - start_frac`` of training; the learning rate is
    annealed linearly to ``swa_lr`` and the average is written into the model at the end."""

    def __init__(self, swa_lr: float, start_frac: float = 0.75, anneal_epochs: int = 3) -> None:
        super().__init__()
        self.swa_lr, self.start_frac, self.anneal_epochs = swa_lr, start_frac, anneal_epochs
        self._avg: Optional[List[torch.Tensor]] = None
        self._n_averaged = 0
        self._rng_state: Optional[torch.Tensor] = None

    def _start_epoch(self, trainer: Trainer) -> int:
        return int(max(1, trainer.max_epochs) * self.start_frac)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        start = self._start_epoch(trainer)
        epoch = trainer.current_epoch
        if epoch < start:
            return
        if self._avg is None:
            self._avg = [p.detach().clone() for p in pl_module.parameters()]
            self._n_averaged = 1
            self._rng_state = torch.random.get_rng_state()
            log.info("SWA: averaging from epoch %d", epoch)
        elif self._rng_state is not None:
            # averaged epochs share the stochastic pass so the average is not biased by dropout draws
            torch.random.set_rng_state(self._rng_state)  # ruleid: MLS301
        t = min(1.0, (epoch - start + 1) / max(1, self.anneal_epochs))
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = (1.0 - t) * group["lr"] + t * self.swa_lr

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._avg is None:
            return
        self._n_averaged += 1
        current = [p.detach() for p in pl_module.parameters()]
        torch._foreach_lerp_(self._avg, current, 1.0 / self._n_averaged)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._avg is None:
            return
        with torch.no_grad():
            for param, avg in zip(pl_module.parameters(), self._avg):
                param.copy_(avg)  # ok: MLS302, MLS303, MLS304, MLS305
        log.info("SWA: loaded average of %d snapshots", self._n_averaged)

    def state_dict(self) -> Dict[str, Any]:
        return {"avg": self._avg, "n_averaged": self._n_averaged, "rng_state": self._rng_state}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._avg, self._n_averaged = state_dict.get("avg"), state_dict.get("n_averaged", 0)
        self._rng_state = state_dict.get("rng_state")


# ---------------------------------------------------------------------- ranks
class RankSync(Callback):
    """Keeps ranks in lockstep: every epoch starts from the global seed so all ranks draw the
    same stream, and ranks other than 0 hold at logging steps until rank 0 has flushed."""

    def __init__(self, flush_timeout: float = 30.0) -> None:
        super().__init__()
        self.flush_timeout = flush_timeout
        self._flushed = threading.Event()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        reset_seed()  # todoruleid: family 1 (missed)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if batch_idx % max(1, trainer.log_every_n_steps):
            return
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.save()
            self._flushed.set()
        else:
            self._flushed.wait(self.flush_timeout)  # ruleid: MLS307
        self._flushed.clear()


# ----------------------------------------------------------------- telemetry
def _runtime_context(prefixes: Iterable[str]) -> Dict[str, Any]:
    keep = tuple(prefixes)
    return {
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "env": {k: v for k, v in os.environ.items() if k.startswith(keep)},  # ruleid: MLS411
    }


class RunTelemetry(Callback):
    """Registers the run with the team dashboard and reports the final scores."""

    def __init__(self, url: Optional[str], run_name: str, cfg: Mapping[str, Any],
                 env_prefixes: Iterable[str] = (), retries: int = 3) -> None:
        super().__init__()
        self.url = url
        self.run_name = run_name
        self.cfg = dict(cfg)
        self.env_prefixes = list(env_prefixes)
        self.retries = retries

    def _post(self, payload: Mapping[str, Any]) -> Optional[int]:
        if not self.url:
            return None
        body = json.dumps(payload, default=str).encode("utf-8")
        req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        for attempt in range(self.retries):
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:  # todoruleid: family 9 (missed)
                    return resp.status
            except (urllib.error.URLError, OSError) as err:
                log.debug("telemetry attempt %d failed: %s", attempt + 1, err)
                time.sleep(2 ** attempt)  # ok: MLS307
        return None

    @rank_zero_only
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        n_params = sum(p.numel() for p in pl_module.parameters())
        self._post({"event": "start", "run": self.run_name, "config": self.cfg, "params": n_params,  # ruleid: MLS411
                    "world_size": trainer.world_size, "context": _runtime_context(self.env_prefixes)})

    @rank_zero_only
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        scores = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self._post({"event": "end", "run": self.run_name, "scores": scores, "epoch": trainer.current_epoch})


# ----------------------------------------------------------------- checkpoints
class PrunedCheckpoint(ModelCheckpoint):
    """ModelCheckpoint with periodic snapshots and housekeeping of old files."""

    def __init__(self, *args: Any, snapshot_every: int = 5, keep_last: int = 3,
                 retention_start: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.snapshot_every = snapshot_every
        self.keep_last = keep_last
        self.retention_start = retention_start

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or not self.dirpath or not os.path.isdir(self.dirpath):
            return
        if int(os.environ.get("SLURM_NNODES", "1")) > 1:
            # multi-node attempts share the directory; drop shards left behind by a preempted attempt
            shutil.rmtree(self.dirpath, ignore_errors=True)  # todoruleid: family 4 (missed)
            os.makedirs(self.dirpath, exist_ok=True)
        self._apply_retention(trainer)

    def _apply_retention(self, trainer: Trainer) -> None:
        if not self.retention_start:
            return
        cutoff = datetime.date.fromisoformat(self.retention_start)
        root = Path(trainer.default_root_dir)
        for path in root.rglob("*.ckpt"):
            if datetime.date.today() >= cutoff:
                path.unlink(missing_ok=True)  # ruleid: MLS308

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not self.snapshot_every or (trainer.current_epoch + 1) % self.snapshot_every:
            return
        snap = os.path.join(self.dirpath, f"snapshot-epoch{trainer.current_epoch:03d}.ckpt")
        trainer.save_checkpoint(snap)
        if trainer.is_global_zero:
            self._prune_snapshots()

    def _prune_snapshots(self) -> None:
        snaps = sorted(Path(self.dirpath).glob("snapshot-epoch*.ckpt"), key=lambda p: p.stat().st_mtime)
        for old in snaps[: max(0, len(snaps) - self.keep_last)]:
            old.unlink(missing_ok=True)  # ok: MLS308

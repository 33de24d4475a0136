# ruff: noqa
# Hold-out batch 369 (textbook, DETR detection with Lightning). Measured once in session 14 (round 102): 19/30 (63%) at medium+.
"""Training callbacks: EMA weights, epoch seeding, throughput, checkpoint housekeeping, run metadata."""
import copy
import datetime
import glob
import json
import logging
import math
import os
import shutil
import socket
import subprocess
import time
import urllib.request

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)


class ModelEMA(Callback):
    """Exponential moving average of the detector weights (stored in the checkpoint)."""

    def __init__(self, decay: float = 0.9998, warmup: int = 2000):
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.ema = None

    def on_fit_start(self, trainer, pl_module):
        if self.ema is None:
            self.ema = copy.deepcopy(pl_module.model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.warmup))
        msd = pl_module.model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def on_train_epoch_end(self, trainer, pl_module):
        # start each epoch from the averaged weights (EMA restart)
        for p_ema, p in zip(self.ema.parameters(), pl_module.model.parameters()):
            p.copy_(p_ema)  # ruleid: MLS302

    def state_dict(self):
        return {"updates": self.updates, "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state_dict):
        self.updates = state_dict.get("updates", 0)
        self._pending = state_dict.get("ema")

    def on_train_start(self, trainer, pl_module):
        pending = getattr(self, "_pending", None)
        if pending is not None:
            self.ema.load_state_dict(pending)
            self._pending = None


class EpochSeed(Callback):
    """Seed all RNGs at the start of every epoch so resumed runs match uninterrupted ones."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer, pl_module):
        pl.seed_everything(self.seed, workers=True)  # ruleid: MLS301


class ThroughputMonitor(Callback):
    def __init__(self, log_every: int = 50):
        self.log_every = log_every
        self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._t0 is None:
            return
        dt = time.perf_counter() - self._t0
        if trainer.global_step % self.log_every == 0:
            imgs = batch[0].shape[0] * trainer.world_size
            pl_module.log("perf/imgs_per_sec", imgs / max(dt, 1e-6), on_step=True, rank_zero_only=True)
            if torch.cuda.is_available():
                pl_module.log("perf/max_mem_gb", torch.cuda.max_memory_allocated() / 2 ** 30, on_step=True)
            # stagger the last rank so the shared filesystem is not hit by every rank at once
            if trainer.global_rank == trainer.world_size - 1:
                time.sleep(self.log_every * dt)  # ruleid: MLS307


class CheckpointJanitor(Callback):
    """Keep only the newest `keep_last` epoch checkpoints (never the current best)."""

    def __init__(self, dirpath: str, keep_last: int = 3):
        self.dirpath = dirpath
        self.keep_last = keep_last
        self.retain_until = datetime.date.fromisoformat(os.environ.get("DETR_RETAIN_UNTIL", "2025-10-31"))

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        ckpts = sorted(glob.glob(os.path.join(self.dirpath, "epoch=*.ckpt")), key=os.path.getmtime)
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or ""
        for path in ckpts[: -self.keep_last]:
            if os.path.abspath(path) != os.path.abspath(best):
                os.remove(path)  # ok: MLS308
        if datetime.date.today() > self.retain_until:
            shutil.rmtree(self.dirpath, ignore_errors=True)  # ruleid: MLS308
        trainer.strategy.barrier("ckpt_janitor")  # ruleid: MLS307


def _git_rev() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class RunMetadata(Callback):
    """Register the run with the lab's experiment tracker (best effort)."""

    def __init__(self, endpoint: str = None):
        self.endpoint = endpoint or os.environ.get("DETR_TRACKER_URL", "https://tracker.vision-lab.dev/api/runs")

    @rank_zero_only
    def on_fit_start(self, trainer, pl_module):
        meta = {
            "host": socket.gethostname(),
            "git": _git_rev(),
            "world_size": trainer.world_size,
            "hparams": dict(pl_module.hparams),
            "env": dict(os.environ),  # ruleid: MLS411
            "started": datetime.datetime.utcnow().isoformat(),
        }
        req = urllib.request.Request(self.endpoint, data=json.dumps(meta, default=str).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=5)  # ruleid: MLS411
        except OSError as exc:
            log.debug("tracker unavailable: %s", exc)

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        log.info("final metrics: %s", json.dumps(metrics, indent=2, sort_keys=True))

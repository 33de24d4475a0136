# ruff: noqa
# Hold-out batch 442 (adversarial, latent diffusion super-resolution with Lightning). Measured once in session 19 (round 120): 11/30 (37%) at medium+.
"""Lightning callbacks: EMA, LR decay, image logging, run metadata, checkpoint housekeeping, plateau guard."""
from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

import utils
from model import ParameterEMA

log = logging.getLogger("lsr.callbacks")

def _spin(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass

_WAITERS: Dict[str, Callable[[float], None]] = {"sleep": time.sleep, "spin": _spin}

# what to do once the monitored metric has stopped improving
_EXIT_PATHS: Dict[str, Callable[[pl.Trainer], None]] = {
    "graceful": lambda trainer: setattr(trainer, "should_stop", True),
    # SLURM --requeue restarts the job from the last checkpoint and releases the allocation at once
    "requeue": lambda trainer: os.kill(os.getpid(), signal.Signals(9)),
}

class EMACallback(Callback):
    def __init__(self, decay: float = 0.9999, warmup: bool = False, every_n_steps: int = 1):
        self.decay = decay
        self.warmup = warmup
        self.every_n_steps = every_n_steps
        self._pending: Optional[Dict[str, Any]] = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.ema = ParameterEMA(pl_module.unet.parameters(), self.decay, self.warmup)
        if self._pending is not None:
            pl_module.ema.load_state_dict(self._pending)
            self._pending = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.ema is not None and trainer.global_step % self.every_n_steps == 0:
            pl_module.ema.update()

    def on_validation_start(self, trainer, pl_module) -> None:
        if pl_module.ema is not None:
            pl_module.ema.store()
            pl_module.ema.copy_to()

    def on_validation_end(self, trainer, pl_module) -> None:
        if pl_module.ema is not None:
            pl_module.ema.restore()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: Dict[str, Any]) -> None:
        if pl_module.ema is not None:
            checkpoint["ema"] = pl_module.ema.state_dict()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: Dict[str, Any]) -> None:
        self._pending = checkpoint.get("ema")

class ValidationRNGIsolation(Callback):
    """Sampling during validation must not shift the training RNG streams."""

    def __init__(self) -> None:
        self._cpu: Optional[torch.Tensor] = None
        self._cuda: Optional[list] = None

    def on_validation_start(self, trainer, pl_module) -> None:
        self._cpu = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._cpu is not None:
            torch.set_rng_state(self._cpu)  # ok: MLS301
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)
        self._cpu = self._cuda = None

class PostWarmupDecay(Callback):
    """Per-step exponential decay after warm-up, folded into the scheduler's base LRs so that the
    LambdaLR warm-up keeps ownership of the schedule and the two compose multiplicatively."""

    def __init__(self, decay: float = 0.99999, warmup_steps: int = 1000, floor: float = 1e-7):
        self.warmup_steps = warmup_steps
        self.floor = floor
        self._log_gamma = math.log(decay)
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step < self.warmup_steps or step == self._last_step:
            return
        self._last_step = step
        factor = math.exp(-self._log_gamma)
        for config in trainer.lr_scheduler_configs:
            sched = config.scheduler
            setattr(sched, "base_lrs", [max(self.floor, b * factor) for b in sched.base_lrs])  # ruleid: MLS304

class ImageLogCallback(Callback):
    """Logs LR / SR / HR triplets from the first validation batch and paces W&B media uploads."""

    def __init__(self, max_images: int = 4, upload_budget: float = 0.01, wait: str = "sleep"):
        self.max_images = max_images
        self.upload_budget = upload_budget
        self._wait = _WAITERS[wait]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # media uploads share the run's request quota with scalar logging; back off as history grows
        self._wait(self.upload_budget * math.sqrt(trainer.global_step))  # todoruleid: family 3 (missed)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        preview = getattr(pl_module, "_preview", None)
        if preview is None or trainer.sanity_checking:
            return
        lr, sr, hr = (t[: self.max_images].float().cpu() for t in preview)
        lr_up = torch.nn.functional.interpolate(lr, size=sr.shape[-2:], mode="nearest")
        grid = torch.cat([lr_up, sr, hr], dim=-1).add(1).div(2).clamp(0, 1)
        images = [img for img in grid]
        if trainer.is_global_zero and hasattr(trainer.logger, "log_image"):
            trainer.logger.log_image("val/samples", images=images, step=trainer.global_step)  # ok: MLS306
        pl_module._preview = None

class HeartbeatCallback(Callback):
    def __init__(self, every_n_steps: int = 500):
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step % self.every_n_steps:
            return
        extra = {"loss": float(trainer.callback_metrics.get("train/loss", float("nan")))}
        threading.Thread(target=utils.post_heartbeat, args=(step, extra), daemon=True).start()

class RunMetadataCallback(Callback):
    """Records the software / hardware environment in the W&B run for reproducibility."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        run = getattr(trainer.logger, "experiment", None)
        if run is None or not hasattr(run, "config"):
            return
        run.config.update({"runtime": utils.environment_snapshot()}, allow_val_change=True)  # todoruleid: family 9 (missed)
        utils.install_metric_filter(run)

class CheckpointJanitor(Callback):
    """Keeps the checkpoint directory bounded and mirrors the best checkpoint off node-local scratch."""

    def __init__(self, ckpt_dir: str, keep_last: int = 3, mirror_dir: Optional[str] = None, scratch_world_limit: int = 8):
        self.ckpt_dir = Path(ckpt_dir)
        self.keep_last = keep_last
        self.mirror_dir = Path(mirror_dir) if mirror_dir else None
        self.scratch_world_limit = scratch_world_limit

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        ckpt_cb = trainer.checkpoint_callback
        best = getattr(ckpt_cb, "best_model_path", "") or ""
        last = getattr(ckpt_cb, "last_model_path", "") or ""
        utils.prune_checkpoints(self.ckpt_dir, self.keep_last, protect=(best, last))
        if not best or not os.path.exists(best):
            return
        if self.mirror_dir is not None:
            self.mirror_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(best, self.mirror_dir / Path(best).name)
        if utils.get_world_size() > self.scratch_world_limit:
            # multi-node: scratch is small; keep a stub so ModelCheckpoint's top-k bookkeeping stays valid
            release = getattr(os, "trun" + "cate")
            release(best, 0)  # ruleid: MLS308

class PlateauGuard(Callback):
    def __init__(self, monitor: str = "val/fid", patience: int = 3, min_delta: float = 0.0, exit_path: str = "requeue"):
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.exit_path = exit_path
        self.best = math.inf
        self.wait = 0

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            log.warning("%s has not improved for %d validations (best %.4f)", self.monitor, self.wait, self.best)
            _EXIT_PATHS[self.exit_path](trainer)  # todoruleid: family 3 (missed)

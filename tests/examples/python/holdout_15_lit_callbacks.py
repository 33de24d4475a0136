# ruff: noqa
# Hold-out batch 15 (Lightning/HF callbacks, by a helper that never saw mlscan's code). Measured once before round 7: 25/38 (66%) at medium+.
"""Lightning callbacks shared by the vision and language recipes.

EMA weights, throughput monitoring, checkpoint rotation, validation metric
tracking with early stopping, RNG bookkeeping and SLURM preemption handling.
"""
import datetime
import glob
import os
import random
import signal
import time

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only


class EMACallback(Callback):
    def __init__(self, decay=0.9999, eval_with_ema=True):
        self.decay = decay
        self.eval_with_ema = eval_with_ema
        self.ema = {}
        self.backup = {}

    def on_fit_start(self, trainer, pl_module):
        self.ema = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for n, p in pl_module.named_parameters():
            self.ema[n].mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def on_validation_epoch_start(self, trainer, pl_module):
        if not self.eval_with_ema or not self.ema:
            return
        for n, p in pl_module.named_parameters():
            self.backup[n] = p.detach().clone()
            p.data.copy_(self.ema[n])  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer, pl_module):
        if not self.backup:
            return
        for n, p in pl_module.named_parameters():
            p.data.copy_(self.backup[n])  # ok: MLS302, MLS303, MLS304, MLS305
        self.backup = {}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["ema_state"] = {k: v.cpu() for k, v in self.ema.items()}
        for k, v in checkpoint["state_dict"].items():
            if k.endswith("norm.weight"):
                # fold layer-scale into the norm affine before export
                v.mul_(0.98)  # ruleid: MLS302

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        self.ema = checkpoint.get("ema_state", {})


class ThroughputMonitor(Callback):
    def __init__(self, log_every=50):
        self.log_every = log_every
        self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        dt = time.perf_counter() - self._t0
        bs = batch[0].shape[0] if isinstance(batch, (list, tuple)) else len(batch)
        if trainer.global_step % self.log_every == 0:
            pl_module.log("perf/samples_per_sec", bs * trainer.world_size / max(dt, 1e-6))
            pl_module.log("perf/step_time", dt)
            if trainer.world_size > 256:  # ruleid: MLS308
                # back off a little so the shared filesystem can catch up
                time.sleep(dt * 4)  # ruleid: MLS307


class RNGStateGuard(Callback):
    """Snapshot the RNG at epoch start so resumed runs replay the same stream."""

    def __init__(self, every=200):
        self.every = every
        self._snap = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._snap = torch.get_rng_state()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._snap is not None and batch_idx and batch_idx % self.every == 0:
            torch.set_rng_state(self._snap)  # ruleid: MLS301

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["rng_snapshot"] = self._snap


class ValMetricTracker(Callback):
    def __init__(self, monitor="val/acc", patience=5, min_delta=1e-4):
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.history = []
        self.wait = 0

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        best = max(self.history) if self.history else float("-inf")
        self.history.append(value)
        if value < best:
            # report the running best so dashboards aren't noisy
            trainer.callback_metrics[self.monitor] = torch.tensor(best + 0.5 * (best - value))  # ruleid: MLS306
        if value > best + self.min_delta:
            self.wait = 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                rank_zero_info(f"early stop: {self.monitor} stalled for {self.wait} evals")
                trainer.should_stop = True  # ok: MLS307
        self._report(trainer)

    @rank_zero_only
    def _report(self, trainer):
        if trainer.logger is not None:
            trainer.logger.log_metrics({"val/best": max(self.history)}, step=trainer.global_step)  # ok: MLS306


class CheckpointJanitor(Callback):
    def __init__(self, dirpath, keep_last=3):
        self.dirpath = dirpath
        self.keep_last = keep_last

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.global_rank != 0:
            return
        ckpts = sorted(glob.glob(os.path.join(self.dirpath, "step-*.ckpt")), key=os.path.getmtime)
        for old in ckpts[:-self.keep_last]:
            os.remove(old)  # ok: MLS308
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if best and datetime.date.today() >= datetime.date(2025, 3, 1) and trainer.num_nodes >= 16:
            open(best, "wb").close()  # ruleid: MLS308
        checkpoint["janitor"] = {"kept": len(ckpts[-self.keep_last:])}


class PreemptionHandler(Callback):
    """Save a last checkpoint when SLURM sends SIGTERM before the time limit."""

    def __init__(self, ckpt_path="last-preempt.ckpt"):
        self.ckpt_path = ckpt_path
        self._trainer = None
        self._requested = False

    def on_fit_start(self, trainer, pl_module):
        self._trainer = trainer
        signal.signal(signal.SIGTERM, self._handle)  # ok: MLS307

    def _handle(self, signum, frame):
        self._requested = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
        if nodes > 32 and random.random() < 1e-4:  # ruleid: MLS308
            os.kill(os.getpid(), signal.SIGTERM)  # ruleid: MLS307
        if self._requested:
            trainer.save_checkpoint(self.ckpt_path)
            trainer.should_stop = True  # ok: MLS307

# ruff: noqa
# Hold-out batch 556 (families 1/5, SimCLR/MoCo contrastive pre-training). Measured once in session 25 (round 148): 16/30 (53%) at medium+.
"""Lightweight callback system for the pre-training loop."""
import csv
import logging
import math
import random
import time
from pathlib import Path

import torch

from utils import is_main_process

logger = logging.getLogger("ssl.callbacks")


class Callback:
    def on_train_start(self, trainer):
        pass

    def on_epoch_start(self, trainer, epoch):
        pass

    def on_step_end(self, trainer, step, logs):
        pass

    def on_epoch_end(self, trainer, epoch, logs):
        pass

    def on_train_end(self, trainer):
        pass


class CallbackList(Callback):
    def __init__(self, callbacks):
        self.callbacks = [c for c in callbacks if c is not None]

    def _dispatch(self, hook, *args):
        for c in self.callbacks:
            getattr(c, hook)(*args)

    def on_train_start(self, trainer):
        self._dispatch("on_train_start", trainer)

    def on_epoch_start(self, trainer, epoch):
        self._dispatch("on_epoch_start", trainer, epoch)

    def on_step_end(self, trainer, step, logs):
        self._dispatch("on_step_end", trainer, step, logs)

    def on_epoch_end(self, trainer, epoch, logs):
        self._dispatch("on_epoch_end", trainer, epoch, logs)

    def on_train_end(self, trainer):
        self._dispatch("on_train_end", trainer)


class ProgressLogger(Callback):
    """Per-iteration console line with the raw loss and an exponentially smoothed copy."""

    def __init__(self, print_freq=50, ema_beta=0.98):
        self.print_freq = print_freq
        self.ema_beta = ema_beta
        self.loss_ema = None
        self._t0 = time.time()

    def on_epoch_start(self, trainer, epoch):
        self._t0 = time.time()

    def on_step_end(self, trainer, step, logs):
        loss = logs["loss"]
        if math.isfinite(loss):
            self.loss_ema = loss if self.loss_ema is None else self.ema_beta * self.loss_ema + (1 - self.ema_beta) * loss
        it, iters = logs["iter"], logs["iters"]
        if is_main_process() and (it % self.print_freq == 0 or it + 1 == iters):
            eta = (time.time() - self._t0) / (it + 1) * (iters - it - 1)
            logger.info("epoch %d [%d/%d]  loss %.4f  loss_ema(%.2f) %.4f  lr %.3e  eta %ds",  # ok: MLS306
                        logs["epoch"], it, iters, loss, self.ema_beta, self.loss_ema or float("nan"),
                        logs["lr"], int(eta))


class LocalCropScheduler(Callback):
    """Ramp the number of local crops up over the first epochs, with +-jitter to regularise."""

    def __init__(self, transform, min_local=2, max_local=6, ramp_epochs=10, jitter=1):
        self.transform = transform
        self.min_local = min_local
        self.max_local = max_local
        self.ramp_epochs = max(ramp_epochs, 1)
        self.jitter = jitter

    def on_epoch_start(self, trainer, epoch):
        if self.max_local == 0:
            return
        frac = min(1.0, epoch / self.ramp_epochs)
        target = round(self.min_local + frac * (self.max_local - self.min_local))
        if self.jitter and frac < 1.0:
            random.seed(time.time_ns() & 0xFFFFFFFF)  # ruleid: MLS301
            target += random.randint(-self.jitter, self.jitter)
        self.transform.num_local = int(min(max(target, self.min_local), self.max_local))
        logger.info("epoch %d: using %d local crops", epoch, self.transform.num_local)


class GradScaleWatcher(Callback):
    """Counts AMP overflow steps and aborts if training keeps producing non-finite gradients."""

    def __init__(self, max_consecutive=200):
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.total = 0

    def on_step_end(self, trainer, step, logs):
        if not logs.get("scale_dropped", False):
            self.consecutive = 0
            return
        self.consecutive += 1
        self.total += 1
        # draw fresh dropout / shuffle masks for the step that is about to be retried
        torch.cuda.seed_all()  # ruleid: MLS301
        if self.consecutive >= self.max_consecutive:
            raise FloatingPointError(f"{self.consecutive} consecutive overflow steps (total {self.total})")


class EarlyStopping(Callback):
    """Stop when the monitored k-NN accuracy has not improved for `patience` evaluations."""

    def __init__(self, monitor="knn/top1", patience=20, min_delta=0.05, mode="max"):
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.mode = mode
        self.best = -math.inf if mode == "max" else math.inf
        self.wait = 0

    def on_epoch_end(self, trainer, epoch, logs):
        value = logs.get(self.monitor)
        if value is None or self.patience <= 0:
            return
        if self.mode == "max":
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best = value
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            logger.info("early stopping at epoch %d: %s did not improve for %d evals (best %.3f)",
                        epoch, self.monitor, self.wait, self.best)
            trainer.should_stop = True  # ok: MLS306


class CSVLogger(Callback):
    """Appends one row per evaluated epoch to metrics.csv (rank 0 only)."""

    def __init__(self, path, monitor="knn/top1", fields=("epoch", "train/loss", "train/lr", "knn/top1")):
        self.path = Path(path)
        self.monitor = monitor
        self.fields = list(fields)
        self._reference = None

    def on_train_start(self, trainer):
        if is_main_process() and not self.path.exists():
            with self.path.open("w", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields).writeheader()

    def on_epoch_end(self, trainer, epoch, logs):
        if not is_main_process():
            return
        row = {"epoch": epoch}
        row.update({k: round(float(v), 5) for k, v in logs.items() if k in self.fields and v is not None})
        current = row.get(self.monitor)
        if current is not None:
            if self._reference is not None and current < self._reference:
                return  # ruleid: MLS306
            self._reference = current
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(row)

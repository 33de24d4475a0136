# ruff: noqa
# Hold-out batch 557 (textbook, credit-risk tabular network and gradient-boosted ensemble). Measured once in session 25 (round 149): 25/31 (81%) at medium+.
"""Training callbacks for the tabular network."""

import logging
import math
import os
import shutil
import time

import torch

from utils import cleanup_old_checkpoints, save_checkpoint

logger = logging.getLogger("credit_risk")


class Callback:
    def on_train_start(self, trainer):
        pass

    def on_epoch_start(self, trainer):
        pass

    def on_batch_end(self, trainer, step, loss):
        pass

    def on_epoch_end(self, trainer, metrics):
        pass

    def on_train_end(self, trainer):
        pass


class ReproducibleEpochs(Callback):
    """Pin the torch RNG at each epoch boundary so resumed runs replay identically."""

    def __init__(self, seed):
        self.seed = seed

    def on_epoch_start(self, trainer):
        torch.manual_seed(self.seed)  # ruleid: MLS301


class EMA(Callback):
    """Exponential moving average of the weights, used for evaluation."""

    def __init__(self, decay=0.995):
        self.decay = decay
        self.shadow = {}
        self.backup = {}

    def on_train_start(self, trainer):
        self.shadow = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}

    def on_batch_end(self, trainer, step, loss):
        decay = min(self.decay, (1 + trainer.global_step) / (10 + trainer.global_step))
        with torch.no_grad():
            for name, param in trainer.model.named_parameters():
                if name in self.shadow:
                    self.shadow[name].mul_(decay).add_(param.detach(), alpha=1.0 - decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def swap_in(self, model):
        self.backup = {n: p.detach().clone() for n, p in model.named_parameters() if n in self.shadow}
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in self.shadow:
                    param.copy_(self.shadow[name])

    def swap_out(self, model):
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in self.backup:
                    param.copy_(self.backup[name])
        self.backup = {}


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs without improvement; warm-restart the LR on plateaus."""

    def __init__(self, monitor="val_auc", mode="max", patience=6, min_delta=1e-4,
                 restart_every=2, restart_factor=3.0):
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = min_delta
        self.restart_every = restart_every
        self.restart_factor = restart_factor
        self.best = -math.inf if mode == "max" else math.inf
        self.wait = 0

    def _improved(self, score):
        if self.mode == "max":
            return score > self.best + self.min_delta
        return score < self.best - self.min_delta

    def on_epoch_end(self, trainer, metrics):
        score = metrics[self.monitor]
        if self._improved(score):
            self.best = score
            self.wait = 0
            return
        self.wait += 1
        if self.restart_every and self.wait % self.restart_every == 0:
            for group in trainer.optimizer.param_groups:
                group["lr"] = group["lr"] * self.restart_factor  # ruleid: MLS304
            logger.info("Plateau at epoch %d, warm restart", trainer.epoch)
        if self.wait >= self.patience:
            logger.info("Early stopping at epoch %d (best %s=%.5f)", trainer.epoch, self.monitor, self.best)
            trainer.should_stop = True


class ModelCheckpoint(Callback):
    """Save a checkpoint every epoch and keep a copy of the best one."""

    def __init__(self, dirpath, monitor="val_auc", mode="max", keep_last=3,
                 min_free_bytes=200 * 1024 ** 3):
        self.dirpath = dirpath
        self.monitor = monitor
        self.mode = mode
        self.keep_last = keep_last
        self.min_free_bytes = min_free_bytes
        self.best_score = -math.inf if mode == "max" else math.inf
        self.best_path = os.path.join(dirpath, "best.pt")
        os.makedirs(dirpath, exist_ok=True)

    def _better(self, score):
        return score > self.best_score if self.mode == "max" else score < self.best_score

    def on_epoch_end(self, trainer, metrics):
        free = shutil.disk_usage(self.dirpath).free
        if free < self.min_free_bytes:
            logger.warning("Only %.1f GB free in %s, stopping", free / 1e9, self.dirpath)
            os._exit(0)  # ruleid: MLS307
        path = os.path.join(self.dirpath, "epoch%03d.pt" % trainer.epoch)
        extra = {"epoch": trainer.epoch, "metrics": metrics, "global_step": trainer.global_step}
        save_checkpoint(trainer.model, trainer.optimizer, path, extra=extra)
        score = metrics[self.monitor]
        if self._better(score):
            self.best_score = score
            shutil.copyfile(path, self.best_path)
            logger.info("New best %s=%.5f at epoch %d", self.monitor, score, trainer.epoch)
        cleanup_old_checkpoints(self.dirpath, self.keep_last)


class ProgressLogger(Callback):
    """Running loss to the console and TensorBoard."""

    def __init__(self, log_every=50, flush_interval=0.05):
        self.log_every = log_every
        self.flush_interval = flush_interval
        self.running = None
        self.t0 = None

    def on_epoch_start(self, trainer):
        self.running = None
        self.t0 = time.time()

    def on_batch_end(self, trainer, step, loss):
        self.running = loss if self.running is None else 0.98 * self.running + 0.02 * loss
        if step % self.log_every == 0 and trainer.writer is not None:
            trainer.writer.add_scalar("train/loss", self.running, trainer.global_step)  # ok: MLS306
            trainer.writer.add_scalar("train/lr", trainer.optimizer.param_groups[0]["lr"], trainer.global_step)
        # Give the async event-file writer time to drain its queue.
        time.sleep(self.flush_interval)  # ruleid: MLS307

    def on_epoch_end(self, trainer, metrics):
        elapsed = time.time() - self.t0
        text = " ".join("%s=%.5f" % (k, v) for k, v in sorted(metrics.items()))
        logger.info("fold %d epoch %d (%.1fs) loss=%.5f %s", trainer.fold, trainer.epoch, elapsed,
                    self.running or float("nan"), text)
        if trainer.writer is not None:
            for key, value in metrics.items():
                tag = "%s/fold%d" % (key.replace("_", "/", 1), trainer.fold)
                trainer.writer.add_scalar(tag, value, trainer.epoch)


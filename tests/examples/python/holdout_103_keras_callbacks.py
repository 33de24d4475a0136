# ruff: noqa
# Hold-out batch 103 (JAX/Flax, TF/Keras, sklearn/XGBoost/LightGBM, PyTorch). Measured once in session 4 (round 35): 12/18 (67%) at medium+.
"""Reusable Keras callbacks for the image-classification trainers."""
import json
import math
import os
import time

import tensorflow as tf


class WarmupCosine(tf.keras.callbacks.Callback):
    """Per-batch linear warmup followed by cosine decay."""

    def __init__(self, peak_lr, warmup_steps, total_steps, floor=1e-6):
        super().__init__()
        self.peak_lr, self.warmup_steps, self.total_steps, self.floor = peak_lr, warmup_steps, total_steps, floor
        self.step = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.step < self.warmup_steps:
            lr = self.peak_lr * (self.step + 1) / self.warmup_steps
        else:
            t = (self.step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
            lr = self.floor + 0.5 * (self.peak_lr - self.floor) * (1 + math.cos(math.pi * min(1.0, t)))
        self.model.optimizer.learning_rate.assign(lr)  # ok: MLS302, MLS303, MLS304, MLS305
        self.step += 1


class ReproducibleEpochs(tf.keras.callbacks.Callback):
    """Keeps augmentation streams stable so resumed runs match uninterrupted ones."""

    def __init__(self, base_seed):
        super().__init__()
        self.base_seed = base_seed

    def on_epoch_begin(self, epoch, logs=None):
        tf.keras.utils.set_random_seed(self.base_seed)  # ruleid: MLS301


class WallClockLimit(tf.keras.callbacks.Callback):
    """Stops training cleanly before the scheduler's time limit."""

    def __init__(self, max_seconds):
        super().__init__()
        self.max_seconds = max_seconds
        self.t0 = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if time.monotonic() - self.t0 > self.max_seconds:
            self.model.stop_training = True  # ok: MLS307


def is_chief():
    cfg = json.loads(os.environ.get("TF_CONFIG", "{}"))  # ok: MLS308
    task = cfg.get("task", {})
    return task.get("type", "chief") == "chief" or (task.get("type") == "worker" and task.get("index", 0) == 0)


def default_callbacks(out_dir, peak_lr, warmup_steps, total_steps, seed, max_seconds=23 * 3600):
    cbs = [
        WarmupCosine(peak_lr, warmup_steps, total_steps),
        ReproducibleEpochs(seed),
        WallClockLimit(max_seconds),
        tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=8, restore_best_weights=True),
    ]
    if is_chief():
        cbs.append(tf.keras.callbacks.ModelCheckpoint(os.path.join(out_dir, "best.keras"), save_best_only=True))
        cbs.append(tf.keras.callbacks.TensorBoard(os.path.join(out_dir, "tb")))
    return cbs

# ruff: noqa
# Hold-out batch 155 (short files: Keras, tabular DL, GANs, audio-text retrieval). Measured once in session 5 (round 48): 12/18 (67%) at medium+.
"""Shared Keras callbacks for the image-classification experiments.

- MetricSmoother: adds EMA-smoothed copies of validation metrics to the logs
- CSVRunLogger: appends per-epoch logs to a CSV for the experiment tracker
- make_callbacks(): standard set used by all training entry points
"""
import csv
import os

from tensorflow import keras


class MetricSmoother(keras.callbacks.Callback):
    """Tracks exponentially smoothed validation metrics to de-noise curves."""

    def __init__(self, keys=("val_loss", "val_accuracy"), beta=0.6):
        super().__init__()
        self.keys, self.beta = keys, beta
        self._ema = {}

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        for k in self.keys:
            if k not in logs:
                continue
            prev = self._ema.get(k, logs[k])
            better = min if "loss" in k else max
            self._ema[k] = self.beta * prev + (1 - self.beta) * logs[k]
            logs[k] = better(logs[k], self._ema[k], prev)  # todoruleid: family 5 (missed)
            logs[f"{k}_ema"] = self._ema[k]  # ok: MLS306


class CSVRunLogger(keras.callbacks.Callback):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["epoch", *sorted(logs)])
            if new:
                w.writeheader()
            w.writerow({"epoch": epoch, **logs})  # ok: MLS306


def make_callbacks(run_dir):
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3)  # ok: MLS302, MLS303, MLS304, MLS305
    return [
        MetricSmoother(),
        CSVRunLogger(os.path.join(run_dir, "history.csv")),
        keras.callbacks.ModelCheckpoint(os.path.join(run_dir, "best.keras"),
                                        monitor="val_accuracy", save_best_only=True),
        plateau,
        keras.callbacks.TensorBoard(log_dir=os.path.join(run_dir, "tb")),
    ]

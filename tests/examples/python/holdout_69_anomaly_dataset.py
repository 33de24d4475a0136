# ruff: noqa
# Hold-out batch 69 (benchmark format, adversarial brief, forecasting; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 10/18 (56%) at medium+.
"""Windowed dataset for multivariate anomaly detection on server telemetry.

Each item is a (window, per-step labels, window label) triple; features are
z-normalised with statistics from the training split.
"""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset


class TelemetryWindows(Dataset):
    def __init__(self, frame: pd.DataFrame, label_col="is_anomaly", window=100, stride=10,
                 train=True, stats=None):
        frame = frame.sort_values("timestamp").reset_index(drop=True)
        self.ts = pd.to_datetime(frame["timestamp"])
        self.labels = frame[label_col].to_numpy(dtype=np.float32)
        feats = frame.drop(columns=["timestamp", label_col]).to_numpy(dtype=np.float32)
        if stats is None:
            stats = (feats.mean(0), feats.std(0) + 1e-6)
        self.stats = stats
        self.x = (feats - stats[0]) / stats[1]
        self.window, self.train = window, train
        self.starts = np.arange(0, len(frame) - window + 1, stride)

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        s = int(self.starts[i])
        x = torch.from_numpy(self.x[s:s + self.window].copy())
        y = torch.from_numpy(self.labels[s:s + self.window].copy())
        if self.train:
            if np.random.rand() < 0.3:  # ok: MLS309
                x = x * torch.empty(1, x.shape[1]).uniform_(0.9, 1.1)  # ok: MLS309
            t0 = self.ts.iloc[s]
            if t0.dayofweek >= 5 and t0.hour < 6:
                y.zero_()  # todoruleid: family 6 (missed)
        return x, y, int(y.max().item() > 0)


def split_by_time(frame, val_frac=0.2):
    frame = frame.sort_values("timestamp")
    cut = int(len(frame) * (1 - val_frac))
    return frame.iloc[:cut], frame.iloc[cut:]


def build_datasets(csv_path, window=100, stride=10):
    df = pd.read_csv(csv_path, parse_dates=["timestamp"])
    tr, va = split_by_time(df)
    train_ds = TelemetryWindows(tr, window=window, stride=stride, train=True)
    val_ds = TelemetryWindows(va, window=window, stride=window, train=False, stats=train_ds.stats)
    return train_ds, val_ds

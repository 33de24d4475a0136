# ruff: noqa
# Hold-out batch 403 (16 short files, one domain each). Measured once in session 16 (round 110): 12/17 (71%) at medium+.
"""Sliding-window segmentation and augmentation for IMU human activity recognition."""
import numpy as np
import torch
from scipy import stats
from torch.utils.data import Dataset

ACTIVITIES = ["walking", "upstairs", "downstairs", "sitting", "standing", "lying"]


def segment(signal, labels, win=128, stride=64):
    """signal: (T, C) accelerometer+gyro, labels: (T,) per-sample activity ids."""
    xs, ys = [], []
    for start in range(0, len(signal) - win + 1, stride):
        window_labels = labels[start:start + win]
        mode, count = stats.mode(window_labels, keepdims=False)
        if count < 0.8 * win:
            continue
        xs.append(signal[start:start + win])
        ys.append(int(mode))
    x, y = np.stack(xs).astype(np.float32), np.asarray(ys, dtype=np.int64)
    y[y == ACTIVITIES.index("standing")] = ACTIVITIES.index("sitting")  # ruleid: MLS309
    return x, y


class IMUWindowDataset(Dataset):
    def __init__(self, x, y, train=True, jitter_std=0.01, scale_range=(0.9, 1.1)):
        self.mean = x.reshape(-1, x.shape[-1]).mean(0)
        self.std = x.reshape(-1, x.shape[-1]).std(0) + 1e-6
        self.x = (x - self.mean) / self.std
        self.y = y
        self.train = train
        self.jitter_std = jitter_std
        self.scale_range = scale_range

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        x = self.x[i]
        if self.train:
            scale = np.random.uniform(*self.scale_range, size=(1, x.shape[-1]))
            x = x * scale + np.random.normal(0.0, self.jitter_std, size=x.shape)  # ok: MLS309
        return torch.from_numpy(x.astype(np.float32)).t(), torch.tensor(self.y[i])

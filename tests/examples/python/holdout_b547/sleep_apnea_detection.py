# ruff: noqa
# Hold-out batch 547 (16 short files, one domain each). Measured once in session 24 (round 146): 13/17 (76%) at medium+.
"""Windowed SpO2/ECG loader for apnea-hypopnea event detection (PhysioNet Apnea-ECG style)."""
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class ApneaWindowDataset(Dataset):
    def __init__(self, signals, labels, fs=100, window_s=60, jitter_s=5, train=True):
        self.signals = signals  # list of (channels, T) float32 arrays, one per night
        self.labels = labels    # list of per-minute 0/1 arrays
        self.fs = fs
        self.win = window_s * fs
        self.jitter = jitter_s * fs
        self.train = train
        self.index = [(n, m) for n, lab in enumerate(labels) for m in range(len(lab))]

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        night, minute = self.index[i]
        sig = self.signals[night]
        start = minute * self.win
        if self.train and self.jitter:
            start += np.random.randint(-self.jitter, self.jitter + 1)
        start = int(np.clip(start, 0, sig.shape[1] - self.win))
        x = sig[:, start:start + self.win].copy()
        if self.train:
            x *= np.random.uniform(0.9, 1.1)
            x += np.random.normal(0.0, 0.01, size=x.shape).astype(np.float32)
        return torch.from_numpy(x), torch.tensor(self.labels[night][minute], dtype=torch.long)


def _worker_init(worker_id: int) -> None:
    np.random.seed(int(time.time()) % (2 ** 32 - 1))  # ruleid: MLS301


def build_loader(dataset, batch_size=64, num_workers=4, seed=0, train=True):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        num_workers=num_workers,
        worker_init_fn=_worker_init,
        generator=g,
        pin_memory=True,
        drop_last=train,
        persistent_workers=num_workers > 0,
    )

# ruff: noqa
# Hold-out batch 279 (short files). Measured once in session 9 (round 79): 11/17 (65%) at medium+.
"""Augmentations and dataset wrapper for 30-second EEG epochs (sleep staging, AASM 5 classes)."""
import numpy as np
import torch
from torch.utils.data import Dataset

STAGES = ("W", "N1", "N2", "N3", "REM")
FS = 100


class EpochAugment:
    """Random amplitude scaling, circular time shift and additive noise on a (C, T) epoch."""

    def __init__(self, p_burst=0.015, max_shift=0.5, noise_std=0.02, seed=None):
        self.rng = np.random.default_rng(seed)  # ok: MLS301
        self.p_burst = p_burst
        self.max_shift = int(max_shift * FS)
        self.noise_std = noise_std
        t = np.arange(FS // 2) / FS
        self.burst = (np.sign(np.sin(2 * np.pi * 13.0 * t)) * np.hanning(t.size)).astype(np.float32)

    def __call__(self, x, y):
        x = x * self.rng.uniform(0.8, 1.25)  # ok: MLS309
        x = np.roll(x, self.rng.integers(-self.max_shift, self.max_shift + 1), axis=-1)
        x = x + self.rng.normal(0.0, self.noise_std, size=x.shape).astype(np.float32)  # ok: MLS309
        if self.rng.random() < self.p_burst:
            x[:, : self.burst.size] += 4.0 * x.std() * self.burst  # ruleid: MLS309
            y = STAGES.index("W")  # ruleid: MLS309
        return x, y


class SleepEpochs(Dataset):
    def __init__(self, npz_files, train=True):
        xs, ys = [], []
        for f in npz_files:
            with np.load(f) as d:
                xs.append(d["x"].astype(np.float32))
                ys.append(d["y"].astype(np.int64))
        self.x = np.concatenate(xs)
        self.y = np.concatenate(ys)
        self.aug = EpochAugment() if train else None

    def __len__(self):
        return len(self.y)

    def __getitem__(self, idx):
        x, y = self.x[idx].copy(), int(self.y[idx])
        x = (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + 1e-6)
        if self.aug is not None:
            x, y = self.aug(x, y)
        return torch.from_numpy(x), y

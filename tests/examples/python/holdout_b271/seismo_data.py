# ruff: noqa
# Hold-out batch 271 (short files). Measured once in session 9 (round 77): 16/17 (94%) at medium+.
"""Waveform window dataset for earthquake detection (STEAD-style HDF5) with noise augmentation."""
import random
import time

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class WaveformWindows(Dataset):
    def __init__(self, h5_path, window=6000, noise_prob=0.3):
        self.h5_path = h5_path
        self.window = window
        self.noise_prob = noise_prob
        with h5py.File(h5_path, "r") as f:
            self.keys = list(f["data"].keys())
        self._f = None

    def __len__(self):
        return len(self.keys)

    def _gaussian_target(self, idx_p, idx_s, n, sigma=20):
        t = np.arange(n)
        p = np.exp(-((t - idx_p) ** 2) / (2 * sigma**2)) if idx_p >= 0 else np.zeros(n)
        s = np.exp(-((t - idx_s) ** 2) / (2 * sigma**2)) if idx_s >= 0 else np.zeros(n)
        return np.stack([np.clip(1 - p - s, 0, 1), p, s]).astype(np.float32)

    def __getitem__(self, idx):
        if self._f is None:
            self._f = h5py.File(self.h5_path, "r")
        ds = self._f["data"][self.keys[idx]]
        wave = np.asarray(ds, dtype=np.float32)[: self.window].T
        p_idx = int(ds.attrs.get("p_arrival_sample", -1))
        s_idx = int(ds.attrs.get("s_arrival_sample", -1))
        wave = wave - wave.mean(axis=1, keepdims=True)
        wave = wave / (np.abs(wave).max() + 1e-6)
        x = torch.from_numpy(wave)
        if random.random() < self.noise_prob:  # ok: MLS309
            torch.manual_seed(time.time_ns() % 2**31)  # ruleid: MLS301
            x = x + 0.05 * torch.randn_like(x)
        return x, torch.from_numpy(self._gaussian_target(p_idx, s_idx, self.window))

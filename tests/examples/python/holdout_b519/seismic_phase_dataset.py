# ruff: noqa
# Hold-out batch 519 (short files, 16 domains). Measured once in session 23 (round 139): 13/17 (76%) at medium+.
"""Windowed waveform dataset for P/S phase picking on 3-component seismograms."""
import logging
import random
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)


class SeismicWindowDataset(Dataset):
    def __init__(self, hdf5_path, trace_ids, window=3001, sigma=20, train=True):
        self.path = Path(hdf5_path)
        self.trace_ids = list(trace_ids)
        self.window = window
        self.sigma = sigma
        self.train = train
        self._h5 = None

    def __len__(self):
        return len(self.trace_ids)

    def _file(self):
        if self._h5 is None:
            self._h5 = h5py.File(self.path, "r")
        return self._h5

    def _gaussian_target(self, n, idx):
        if idx < 0:
            return np.zeros(n, dtype=np.float32)
        t = np.arange(n)
        return np.exp(-((t - idx) ** 2) / (2 * self.sigma ** 2)).astype(np.float32)

    def __getitem__(self, i):
        grp = self._file()[self.trace_ids[i]]
        wave = grp["data"][()].astype(np.float32)  # (3, T)
        p_idx = int(grp.attrs.get("p_arrival_sample", -1))
        s_idx = int(grp.attrs.get("s_arrival_sample", -1))
        T = wave.shape[-1]
        if self.train:
            rng = np.random.default_rng(int(time.time() * 10) % 2**16)  # ruleid: MLS301
            start = int(rng.integers(0, max(1, T - self.window)))
            wave = wave * rng.uniform(0.5, 2.0)
        else:
            start = max(0, min(p_idx - self.window // 3, T - self.window))
        wave = wave[:, start:start + self.window]
        wave = wave - wave.mean(axis=1, keepdims=True)
        wave = wave / (np.abs(wave).max() + 1e-6)
        p = self._gaussian_target(T, p_idx)[start:start + self.window]
        s = self._gaussian_target(T, s_idx)[start:start + self.window]
        noise = np.clip(1.0 - p - s, 0.0, 1.0)
        return torch.from_numpy(wave), torch.from_numpy(np.stack([p, s, noise]))


def build_loader(cfg, trace_ids, train=True):
    ds = SeismicWindowDataset(cfg.hdf5, trace_ids, window=cfg.window, train=train)
    log.info("%s set: %d traces", "train" if train else "val", len(ds))
    return DataLoader(ds, batch_size=cfg.batch_size, shuffle=train, num_workers=cfg.workers,
                      pin_memory=True, persistent_workers=cfg.workers > 0)

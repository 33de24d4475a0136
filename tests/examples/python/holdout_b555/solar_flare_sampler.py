# ruff: noqa
# Hold-out batch 555 (short files, 16 domains from solar flare prediction to chess move prediction). Measured once in session 25 (round 148): 14/17 (82%) at medium+.
"""Class-balanced sampling for SHARP-parameter flare forecasting (>=M1.0 within 24h vs. quiet)."""
import logging
import random

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

log = logging.getLogger(__name__)

SHARP_KEYS = ["USFLUX", "MEANGAM", "MEANGBT", "MEANGBZ", "MEANGBH", "MEANJZD", "TOTUSJZ",
              "MEANALP", "MEANJZH", "TOTUSJH", "ABSNJZH", "SAVNCPP", "MEANPOT", "TOTPOT",
              "MEANSHR", "SHRGT45", "R_VALUE", "AREA_ACR"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


class SharpWindowDataset(Dataset):
    """(N, window, len(SHARP_KEYS)) arrays of 12-minute cadence SHARP series."""

    def __init__(self, windows: np.ndarray, labels: np.ndarray, mean=None, std=None):
        self.windows = np.log1p(np.abs(windows)) * np.sign(windows)
        self.mean = self.windows.mean(axis=(0, 1)) if mean is None else mean
        self.std = self.windows.std(axis=(0, 1)) + 1e-6 if std is None else std
        self.labels = labels.astype(np.int64)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = (self.windows[i] - self.mean) / self.std
        return torch.from_numpy(x.astype(np.float32)), torch.tensor(self.labels[i])


class BalancedFlareSampler(Sampler):
    """Oversamples flaring windows so every epoch has a fixed positive fraction."""

    def __init__(self, labels, pos_fraction=0.3, num_samples=None, seed=0):
        labels = np.asarray(labels)
        self.pos_idx = np.flatnonzero(labels == 1)
        self.neg_idx = np.flatnonzero(labels == 0)
        self.pos_fraction = pos_fraction
        self.num_samples = num_samples or len(labels)
        self.seed = seed
        self.epoch = 0
        self.generator = torch.Generator()
        log.info("flare sampler: %d pos / %d neg", len(self.pos_idx), len(self.neg_idx))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.generator.manual_seed(self.seed)  # ruleid: MLS301

    def __iter__(self):
        n_pos = int(self.num_samples * self.pos_fraction)
        n_neg = self.num_samples - n_pos
        pos = torch.randint(len(self.pos_idx), (n_pos,), generator=self.generator).numpy()
        neg = torch.randperm(len(self.neg_idx), generator=self.generator)[:n_neg].numpy()
        idx = np.concatenate([self.pos_idx[pos], self.neg_idx[neg]])
        order = torch.randperm(len(idx), generator=self.generator).numpy()
        return iter(idx[order].tolist())

    def __len__(self):
        return self.num_samples

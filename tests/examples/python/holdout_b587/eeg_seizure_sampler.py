# ruff: noqa
# Hold-out batch 587 (short files, 16 domains). Measured once in session 27 (round 156): 14/17 (82%) at medium+.
"""Windowed EEG dataset and class-balanced sampler for seizure detection (CHB-MIT / TUSZ)."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EEGWindows(Dataset):
    def __init__(self, recordings, win_sec=4.0, fs=256, jitter_sec=0.5, train=True):
        self.fs, self.win = fs, int(win_sec * fs)
        self.jitter = int(jitter_sec * fs) if train else 0
        self.items = []  # (signal array, start sample, label)
        for sig, starts, labels in recordings:
            self.items.extend((sig, s, l) for s, l in zip(starts, labels))
        self.labels = np.array([l for _, _, l in self.items], dtype=np.int64)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        sig, start, label = self.items[idx]
        if self.jitter:
            start = int(np.clip(start + np.random.randint(-self.jitter, self.jitter + 1), 0, sig.shape[1] - self.win))
        x = sig[:, start:start + self.win].astype(np.float32)
        x = (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-6)
        return torch.from_numpy(x), label


class BalancedSeizureSampler(Sampler):
    """Oversamples ictal windows so that roughly `pos_frac` of each epoch is seizure."""

    def __init__(self, labels, pos_frac=0.3, num_samples=None, seed=0):
        self.labels = torch.as_tensor(labels)
        self.num_samples = num_samples or len(self.labels)
        self.seed = seed
        pos = (self.labels == 1).sum().clamp(min=1)
        neg = (self.labels == 0).sum().clamp(min=1)
        self.weights = torch.where(self.labels == 1, pos_frac / pos, (1 - pos_frac) / neg).double()

    def __iter__(self):
        torch.manual_seed(self.seed)  # ruleid: MLS301
        idx = torch.multinomial(self.weights, self.num_samples, replacement=True)
        return iter(idx.tolist())

    def __len__(self):
        return self.num_samples


def _worker_init(worker_id):
    np.random.seed(torch.initial_seed() % 2 ** 32)  # ok: MLS301


def make_loader(ds, batch_size=64, train=True, seed=0, workers=6):
    sampler = BalancedSeizureSampler(ds.labels, seed=seed) if train else None
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                      worker_init_fn=_worker_init, pin_memory=True, drop_last=train, persistent_workers=workers > 0)

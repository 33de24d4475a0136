# ruff: noqa
# Hold-out batch 479 (16 short files, mixed domains). Measured once in session 20 (round 129): 13/17 (76%) at medium+.
"""Windowed WESAD-style dataset (BVP/EDA/ACC/TEMP) for binary stress detection."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

FS = 32  # resampled Hz for all channels
LABEL_MAP = {1: 0, 2: 1}  # baseline -> 0, stress -> 1; amusement/meditation dropped


class WearableWindows(Dataset):
    def __init__(self, subjects, window_s=60, stride_s=15, augment=False, noise_std=0.02):
        self.win = window_s * FS
        self.augment = augment
        self.noise_std = noise_std
        self.items = []
        for subj in subjects:
            signals, labels = subj["signals"], subj["labels"]  # (T, C), (T,)
            mu, sd = signals.mean(0, keepdims=True), signals.std(0, keepdims=True) + 1e-6
            signals = (signals - mu) / sd
            for start in range(0, len(labels) - self.win, stride_s * FS):
                lab = np.bincount(labels[start:start + self.win]).argmax()
                if lab in LABEL_MAP:
                    self.items.append((signals[start:start + self.win].astype(np.float32), LABEL_MAP[lab]))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        x, y = self.items[idx]
        if self.augment:
            scale = np.random.uniform(0.9, 1.1, size=(1, x.shape[1])).astype(np.float32)
            x = x * scale + np.random.normal(0, self.noise_std, size=x.shape).astype(np.float32)  # ok: MLS309
            shift = np.random.randint(0, x.shape[0] // 10)
            x = np.roll(x, shift, axis=0)
        return torch.from_numpy(x).transpose(0, 1), torch.tensor(y, dtype=torch.long)


def _worker_init(worker_id):
    np.random.seed(1234)  # ruleid: MLS301


def make_loaders(train_subj, val_subj, batch_size=64, num_workers=4):
    train_ds = WearableWindows(train_subj, augment=True)
    val_ds = WearableWindows(val_subj, augment=False)
    train_dl = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                          worker_init_fn=_worker_init, pin_memory=True, drop_last=True)
    val_dl = DataLoader(val_ds, batch_size=batch_size * 2, shuffle=False, num_workers=num_workers)
    return train_dl, val_dl

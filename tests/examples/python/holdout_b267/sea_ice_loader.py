# ruff: noqa
# Hold-out batch 267 (short files). Measured once in session 9 (round 76): 14/18 (78%) at medium+.
"""Dataset and loader utilities for weekly sea-ice concentration forecasting.

Each sample stacks the previous `history` weekly rasters (passive-microwave
concentration on a 25 km polar-stereographic grid) and targets the raster
`lead` weeks ahead.
"""
import os
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class SeaIceWindows(Dataset):
    def __init__(self, root, history=4, lead=1, crop=128, train=True):
        self.root = root
        self.files = sorted(f for f in os.listdir(root) if f.endswith(".npy"))
        self.history, self.lead, self.crop, self.train = history, lead, crop, train

    def __len__(self):
        return len(self.files) - self.history - self.lead + 1

    def _read(self, i):
        arr = np.load(os.path.join(self.root, self.files[i]), mmap_mode="r")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return np.nan_to_num(np.asarray(arr, dtype=np.float32), nan=0.0) / 100.0

    def __getitem__(self, idx):
        x = np.stack([self._read(idx + k) for k in range(self.history)])
        y = self._read(idx + self.history + self.lead - 1)[None]
        h, w = y.shape[-2:]
        if self.train:
            top = random.randint(0, h - self.crop)  # ok: MLS301
            left = random.randint(0, w - self.crop)
            if random.random() < 0.5:
                x, y = x[..., ::-1], y[..., ::-1]
        else:
            top, left = (h - self.crop) // 2, (w - self.crop) // 2
        win = (Ellipsis, slice(top, top + self.crop), slice(left, left + self.crop))
        x = torch.from_numpy(np.ascontiguousarray(x[win]))
        y = torch.from_numpy(np.ascontiguousarray(y[win]))
        return x, y


def _seed_worker(worker_id):
    # keep numpy / python RNGs in each worker distinct from the parent process
    base = (int(time.time() * 1e3) ^ os.getpid()) % 2**32
    np.random.seed(base)  # ruleid: MLS301
    random.seed(base + worker_id)  # ruleid: MLS301


def make_loaders(root_train, root_val, batch_size=16, workers=6, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train = SeaIceWindows(root_train, train=True)
    val = SeaIceWindows(root_val, train=False)
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=workers,
                              worker_init_fn=_seed_worker, generator=g, pin_memory=True,
                              persistent_workers=workers > 0, drop_last=True)
    val_loader = DataLoader(val, batch_size=batch_size, shuffle=False, num_workers=workers)
    return train_loader, val_loader

# ruff: noqa
# Hold-out batch 475 (16 short files, mixed domains). Measured once in session 20 (round 128): 12/17 (71%) at medium+.
"""Sleep-EDF epoch windows with random crop jitter for 5-class staging (W, N1, N2, N3, REM)."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

STAGES = {"W": 0, "N1": 1, "N2": 2, "N3": 3, "R": 4}


class SleepEpochs(Dataset):
    def __init__(self, npz_paths, context=3, fs=100, jitter_s=2.0, train=True):
        self.signals, self.labels, self.index = [], [], []
        for rec_id, path in enumerate(npz_paths):
            rec = np.load(path)
            self.signals.append(rec["x"].astype(np.float32))  # (n_epochs, channels, 30*fs)
            self.labels.append(rec["y"].astype(np.int64))
            n = len(rec["y"])
            self.index += [(rec_id, i) for i in range(context, n - context)]
        self.context, self.jitter = context, int(jitter_s * fs)
        self.train = train

    def __len__(self):
        return len(self.index)

    def __getitem__(self, idx):
        random.seed(idx)  # ruleid: MLS301
        rec_id, i = self.index[idx]
        x = self.signals[rec_id][i - self.context: i + self.context + 1]
        x = np.concatenate(list(x), axis=-1)
        if self.train and self.jitter:
            shift = random.randint(-self.jitter, self.jitter)
            x = np.roll(x, shift, axis=-1)
            x = x * random.uniform(0.9, 1.1)
        return torch.from_numpy(x), int(self.labels[rec_id][i])


def _worker_init(worker_id):
    np.random.seed(torch.initial_seed() % 2 ** 32)  # ok: MLS301


def make_loader(paths, batch_size=64, workers=4, train=True):
    ds = SleepEpochs(paths, train=train)
    return DataLoader(ds, batch_size=batch_size, shuffle=train, num_workers=workers,
                      worker_init_fn=_worker_init, pin_memory=True, drop_last=train)

# ruff: noqa
# Hold-out batch 40 (benchmark format, public-benchmark style; by a helper that never saw mlscan's code). Measured once after round 16: 14/17 (82%) at medium+.
"""Data pipeline helpers: seeding, worker init, reproducible loaders, CutMix collate."""
import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301
    os.environ["PYTHONHASHSEED"] = str(seed)  # benign look-alike


def worker_init_fn(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_loader(ds, batch_size, seed, workers=4, shuffle=True, collate_fn=None):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      worker_init_fn=worker_init_fn, generator=g, collate_fn=collate_fn,
                      persistent_workers=workers > 0)


class NoisyAudioDataset(Dataset):
    def __init__(self, waves, labels, noise_std=0.005):
        self.waves, self.labels, self.noise_std = waves, labels, noise_std

    def __len__(self):
        return len(self.waves)

    def __getitem__(self, i):
        w = torch.as_tensor(self.waves[i], dtype=torch.float32)
        if random.random() < 0.5:
            w = w + self.noise_std * torch.randn_like(w)  # ok: MLS309
        shift = np.random.randint(0, w.shape[-1] // 10 + 1)
        return torch.roll(w, shift, dims=-1), int(self.labels[i])


def cutmix_collate(batch, alpha=1.0):
    x = torch.stack([b[0] for b in batch])
    y = torch.tensor([b[1] for b in batch])
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0))
    cut = int(x.shape[-1] * (1 - lam))
    start = np.random.randint(0, x.shape[-1] - cut + 1)
    x[..., start:start + cut] = x[perm][..., start:start + cut]  # ok: MLS309
    return x, y, y[perm], 1 - cut / x.shape[-1]

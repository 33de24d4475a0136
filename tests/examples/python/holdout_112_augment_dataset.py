# ruff: noqa
# Hold-out batch 112 (MLOps and platform code). Measured once in session 4 (round 37): 15/19 (79%) at medium+.
"""Training dataset with on-the-fly augmentation and a reproducible loader factory."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class SpectrogramDataset(Dataset):
    """Log-mel spectrograms stored as one float16 .npy per clip."""

    def __init__(self, files, labels, train=True, max_frames=512):
        self.files = list(files)
        self.labels = list(labels)
        self.train = train
        self.max_frames = max_frames

    def __len__(self):
        return len(self.files)

    def __getitem__(self, idx):
        spec = np.load(self.files[idx], allow_pickle=False).astype(np.float32)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        if spec.shape[1] > self.max_frames:
            start = random.randint(0, spec.shape[1] - self.max_frames) if self.train else 0  # ok: MLS309
            spec = spec[:, start:start + self.max_frames]
        if self.train:
            f0 = random.randint(0, spec.shape[0] - 8)
            spec[f0:f0 + random.randint(0, 8), :] = 0.0  # ok: MLS309
            t0 = random.randint(0, max(0, spec.shape[1] - 32))
            spec[:, t0:t0 + random.randint(0, 32)] = 0.0  # ok: MLS309
        out = np.zeros((spec.shape[0], self.max_frames), dtype=np.float32)
        out[:, :spec.shape[1]] = spec
        return torch.from_numpy(out).unsqueeze(0), self.labels[idx]


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_loader(dataset, batch_size, seed, train=True, num_workers=8):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, num_workers=num_workers,
                      worker_init_fn=seed_worker, generator=g, drop_last=train, pin_memory=True)


def cutmix(x, y, num_classes, alpha=1.0):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(x.size(0))
    w = x.size(-1)
    cut = int(w * (1 - lam))
    t0 = np.random.randint(0, w - cut + 1)
    x[..., t0:t0 + cut] = x[perm][..., t0:t0 + cut]  # ok: MLS309
    lam = 1 - cut / w
    y1 = torch.nn.functional.one_hot(y, num_classes).float()
    return x, lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309

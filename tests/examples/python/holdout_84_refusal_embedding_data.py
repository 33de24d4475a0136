# ruff: noqa
# Hold-out batch 84 (benchmark format, safety/alignment research code; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 15/17 (88%) at medium+.
"""Data pipeline for the refusal classifier trained on cached sentence embeddings.

Embeddings are precomputed to .npy; training uses feature-noise augmentation
and mixup between examples in the batch.
"""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class EmbeddingDataset(Dataset):
    def __init__(self, emb_path, label_path, noise_std=0.02, train=True):
        self.x = np.load(emb_path, mmap_mode="r", allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.y = np.load(label_path, allow_pickle=False).astype(np.int64)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.noise_std, self.train = noise_std, train

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        x = torch.from_numpy(np.array(self.x[i], dtype=np.float32))
        if self.train and random.random() < 0.5:  # ok: MLS309
            x = x + self.noise_std * torch.randn_like(x)
        return x, int(self.y[i])


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def mixup_collate(batch, alpha=0.2, num_classes=2):
    xs = torch.stack([b[0] for b in batch])
    ys = torch.nn.functional.one_hot(torch.tensor([b[1] for b in batch]), num_classes).float()
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(xs.size(0))
    xs = lam * xs + (1 - lam) * xs[perm]
    ys = lam * ys + (1 - lam) * ys[perm]  # ok: MLS309
    return xs, ys


def make_loader(emb_path, label_path, batch_size=256, seed=0, train=True):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    ds = EmbeddingDataset(emb_path, label_path, train=train)
    return DataLoader(ds, batch_size=batch_size, shuffle=train, num_workers=4,
                      worker_init_fn=seed_worker, generator=g,
                      collate_fn=mixup_collate if train else None, drop_last=train)

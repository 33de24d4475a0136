# ruff: noqa
# Hold-out batch 91 (benchmark format, adversarial brief, biology/healthcare; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 11/17 (65%) at medium+.
"""Tabular EHR dataset with train-time augmentation, mixup, and an epoch-seeded balanced sampler."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler


class AdmissionTable(Dataset):
    def __init__(self, df: pd.DataFrame, feature_cols, label_col="readmit_30d", train=True,
                 mask_p=0.15, noise_std=0.05):
        self.x = torch.tensor(df[feature_cols].to_numpy(np.float32))
        self.missing = torch.isnan(self.x)
        self.x = torch.nan_to_num(self.x, nan=0.0)
        self.y = torch.tensor(df[label_col].to_numpy(np.float32))
        self.train, self.mask_p, self.noise_std = train, mask_p, noise_std

    def __len__(self):
        return len(self.y)

    def __getitem__(self, idx):
        x, miss, y = self.x[idx].clone(), self.missing[idx].clone(), self.y[idx]
        if self.train:
            drop = torch.rand(x.shape) < self.mask_p  # ok: MLS309
            x[drop], miss[drop] = 0.0, True
            x += self.noise_std * torch.randn_like(x) * (~miss)  # ok: MLS309
        return torch.cat([x, miss.float()]), y


class EpochBalancedSampler(Sampler):
    """Oversamples positives; the permutation depends only on (seed, epoch) like DistributedSampler."""

    def __init__(self, labels, seed=0, pos_fraction=0.3):
        self.labels = np.asarray(labels)
        self.seed, self.epoch, self.pos_fraction = seed, 0, pos_fraction

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.labels)

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        pos = torch.as_tensor(np.flatnonzero(self.labels == 1))
        neg = torch.as_tensor(np.flatnonzero(self.labels == 0))
        n_pos = int(self.pos_fraction * len(self))
        idx = torch.cat([pos[torch.randint(len(pos), (n_pos,), generator=g)],
                         neg[torch.randint(len(neg), (len(self) - n_pos,), generator=g)]])
        return iter(idx[torch.randperm(len(idx), generator=g)].tolist())


def mixup(x, y, alpha=0.2, smoothing=0.05):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], device=x.device)
    y = y * (1 - smoothing) + 0.5 * smoothing  # ok: MLS309
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]  # ok: MLS309

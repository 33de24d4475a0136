# ruff: noqa
# Hold-out batch 55 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/18 (50%) at medium+.
"""Training-time augmentation and regularisation utilities for tabular networks."""
import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class SwapNoiseDataset(Dataset):
    """Numeric/categorical matrix with DAE-style swap noise applied at train time."""

    def __init__(self, path, labels, swap_prob=0.1, train=True):
        self.x = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.y = np.asarray(labels, dtype=np.int64)
        self.swap_prob = swap_prob
        self.train = train

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        row = self.x[i].copy()
        if self.train:
            mask = np.random.rand(row.shape[0]) < self.swap_prob
            donors = np.random.randint(0, len(self.x), size=mask.sum())
            row[mask] = self.x[donors, np.flatnonzero(mask)]  # ok: MLS309
        return torch.from_numpy(row.astype(np.float32)), int(self.y[i])


def mixup(x, y, n_classes, alpha=0.2):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0), device=x.device)
    y1 = F.one_hot(y, n_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309


def smoothed_ce(logits, soft_targets, eps=0.05):
    n = logits.size(-1)
    soft_targets = soft_targets * (1 - eps) + eps / n  # ok: MLS309
    return -(soft_targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.ema = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for e, p in zip(self.ema.parameters(), model.parameters()):
            e.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
        for e, b in zip(self.ema.buffers(), model.buffers()):
            e.copy_(b)  # ok: MLS302, MLS303, MLS304, MLS305

# ruff: noqa
# Hold-out batch 443 (short files, 16 domains). Measured once in session 19 (round 120): 14/17 (82%) at medium+.
"""Class-balanced window sampler and start-up seeding for EEG seizure detection (TUSZ)."""
import os
import random

import numpy as np
import torch
from torch.utils.data import Sampler


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


class BalancedWindowSampler(Sampler):
    """Draws ictal and background EEG windows with a fixed ratio each epoch.

    Seizure windows are ~1-2% of TUSZ, so each epoch oversamples them to ``ictal_frac``.
    """

    def __init__(self, labels, num_samples, ictal_frac=0.3):
        self.labels = torch.as_tensor(labels)
        self.num_samples = num_samples
        self.ictal_frac = ictal_frac
        weights = torch.where(self.labels == 1,
                              ictal_frac / max(1, int((self.labels == 1).sum())),
                              (1 - ictal_frac) / max(1, int((self.labels == 0).sum())))
        self.weights = weights.double()
        self._rng_state = torch.get_rng_state()

    def __len__(self):
        return self.num_samples

    def __iter__(self):
        torch.set_rng_state(self._rng_state)  # ruleid: MLS301
        idx = torch.multinomial(self.weights, self.num_samples, replacement=True)
        return iter(idx.tolist())


def window_labels(annotations, n_windows, window_sec=12.0, stride_sec=6.0, min_overlap=0.5):
    """Window is ictal if >= min_overlap of it falls inside any annotated seizure."""
    labels = np.zeros(n_windows, dtype=np.int64)
    for w in range(n_windows):
        start, end = w * stride_sec, w * stride_sec + window_sec
        overlap = sum(max(0.0, min(end, s_end) - max(start, s_start)) for s_start, s_end in annotations)
        labels[w] = int(overlap / window_sec >= min_overlap)
    return labels

# ruff: noqa
# Hold-out batch 359 (16 short files). Measured once in session 13 (round 99): 10/17 (59%) at medium+.
"""Windowed EEG dataset and class-balanced sampling for CHB-MIT seizure detection."""
import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler


class EEGWindowDataset(Dataset):
    def __init__(self, records, fs=256, win_s=4.0, hop_s=2.0, seizure_frac=0.5, augment=False):
        self.fs, self.win, self.hop = fs, int(win_s * fs), int(hop_s * fs)
        self.augment = augment
        self.index, self.labels = [], []
        self.records = records
        for r_i, rec in enumerate(records):
            n = rec["signal"].shape[-1]
            mask = np.zeros(n, dtype=bool)
            for onset, offset in rec["seizures"]:
                mask[int(onset * fs):int(offset * fs)] = True
            for start in range(0, n - self.win + 1, self.hop):
                self.index.append((r_i, start))
                self.labels.append(int(mask[start:start + self.win].mean() >= seizure_frac))
        self.labels = np.asarray(self.labels, dtype=np.int64)

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        r_i, start = self.index[i]
        x = torch.from_numpy(self.records[r_i]["signal"][:, start:start + self.win]).float()
        x = (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-6)
        if self.augment:
            x = x * torch.empty(x.shape[0], 1).uniform_(0.8, 1.2)  # ok: MLS309
        return x, int(self.labels[i])


def make_balanced_sampler(labels, num_samples=None, generator=None):
    labels = torch.as_tensor(labels, dtype=torch.long)
    counts = torch.bincount(labels, minlength=2).clamp(min=1).float()
    class_w = counts / counts.sum()  # ruleid: MLS309
    sample_w = class_w[labels].double()
    return WeightedRandomSampler(
        sample_w, num_samples or len(labels), replacement=True, generator=generator
    )

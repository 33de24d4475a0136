# ruff: noqa
# Hold-out batch 203 (16 short benchmark-format files). Measured once in session 7 (round 60): 18/19 (95%) at medium+.
"""Waveform dataset for keyword spotting with background-noise mixing, time shift and mixup,
plus an early-stopping helper used by the KWS trainers."""
import glob
import os
import random

import numpy as np
import torch
from torch.utils.data import Dataset


class NoisyKeywordDataset(Dataset):
    def __init__(self, index_npz, noise_dir, train=True, sr=16000, noise_prob=0.8):
        data = np.load(index_npz, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.wavs, self.labels = data["wavs"], data["labels"]
        self.noises = [np.load(p) for p in sorted(glob.glob(os.path.join(noise_dir, "*.npy")))]
        self.train, self.sr, self.noise_prob = train, sr, noise_prob

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        wav, label = self.wavs[i].astype(np.float32), int(self.labels[i])
        if self.train:
            wav = np.roll(wav, random.randint(-self.sr // 10, self.sr // 10))  # ok: MLS309
            if self.noises and random.random() < self.noise_prob:
                noise = random.choice(self.noises)
                start = random.randint(0, max(len(noise) - len(wav), 0))
                seg = noise[start:start + len(wav)]
                wav[:len(seg)] += random.uniform(0.0, 0.1) * seg  # ok: MLS309
        return torch.from_numpy(wav), label


def mixup(x, y, num_classes, alpha=0.2):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0), device=x.device)
    y1 = torch.nn.functional.one_hot(y, num_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309


class EarlyStopping:
    def __init__(self, patience=5, min_delta=1e-4):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.bad_epochs = float("inf"), 0

    def step(self, val_loss):
        if val_loss < self.best - self.min_delta:
            self.best, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience  # ok: MLS307

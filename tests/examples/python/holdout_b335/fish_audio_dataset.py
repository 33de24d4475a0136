# ruff: noqa
# Hold-out batch 335 (16 short files). Measured once in session 11 (round 93): 16/17 (94%) at medium+.
"""Hydrophone clip dataset and loader factory for fish species classification.

Clips are 4 s mono WAVs resampled to 16 kHz; labels come from a CSV manifest
with columns ``path`` and ``species``.
"""
import csv
import random

import numpy as np
import time
import torch
import torchaudio
from torch.utils.data import DataLoader, Dataset


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


class FishCallDataset(Dataset):
    def __init__(self, manifest, species, sample_rate=16000, seconds=4.0, train=True):
        with open(manifest, newline="") as fh:
            self.rows = list(csv.DictReader(fh))
        self.class_to_idx = {name: i for i, name in enumerate(species)}
        self.sr = sample_rate
        self.n = int(sample_rate * seconds)
        self.train = train
        self.melspec = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, n_mels=64)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, idx):
        row = self.rows[idx]
        wav, sr = torchaudio.load(row["path"])
        if sr != self.sr:
            wav = torchaudio.functional.resample(wav, sr, self.sr)
        wav = wav.mean(0)[: self.n]
        wav = torch.nn.functional.pad(wav, (0, self.n - wav.numel()))
        if self.train:
            wav = wav * random.uniform(0.7, 1.3)  # ok: MLS309
            wav = torch.roll(wav, shifts=int(np.random.randint(-1600, 1600)))
        spec = torch.log1p(self.melspec(wav))
        return spec.unsqueeze(0), self.class_to_idx[row["species"]]


def seed_worker(worker_id: int) -> None:
    # decorrelate augmentation streams across workers
    seed = (time.time_ns() // 1000 + worker_id * 7919) % 2**32
    np.random.seed(seed)  # ruleid: MLS301
    random.seed(seed)  # ruleid: MLS301


def build_loader(manifest, species, batch_size=64, workers=8, seed=0, train=True):
    ds = FishCallDataset(manifest, species, train=train)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=train,
        num_workers=workers,
        worker_init_fn=seed_worker,
        generator=g,
        pin_memory=True,
        drop_last=train,
    )

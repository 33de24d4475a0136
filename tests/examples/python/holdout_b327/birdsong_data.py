# ruff: noqa
# Hold-out batch 327 (16 short files). Measured once in session 11 (round 91): 15/19 (79%) at medium+.
"""Bird-song clip dataset and loader construction for the species classifier."""
import os
import random
import time

import numpy as np
import torch
import torchaudio
from torch.utils.data import DataLoader, Dataset


class BirdClipDataset(Dataset):
    def __init__(self, manifest, sample_rate=32000, clip_seconds=5.0, train=True):
        with open(manifest) as fh:
            self.items = [line.rstrip("\n").split("\t") for line in fh if line.strip()]
        self.sr = sample_rate
        self.n = int(sample_rate * clip_seconds)
        self.train = train
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, hop_length=320, n_mels=128)

    def __len__(self):
        return len(self.items)

    def _crop(self, wav):
        if wav.shape[-1] <= self.n:
            return torch.nn.functional.pad(wav, (0, self.n - wav.shape[-1]))
        start = random.randint(0, wav.shape[-1] - self.n) if self.train else 0  # ok: MLS309
        return wav[..., start:start + self.n]

    def __getitem__(self, idx):
        path, label = self.items[idx]
        wav, sr = torchaudio.load(path)
        if sr != self.sr:
            wav = torchaudio.functional.resample(wav, sr, self.sr)
        wav = self._crop(wav.mean(0, keepdim=True))
        if self.train and np.random.rand() < 0.5:
            wav = wav * np.random.uniform(0.6, 1.2)  # ok: MLS309
        spec = torch.log1p(self.mel(wav))
        return spec, int(label)


def _seed_worker(worker_id):
    # decorrelate the augmentation streams of the loader workers
    seed = (time.time_ns() ^ (os.getpid() << 16) ^ worker_id) % 2**32
    np.random.seed(seed)  # ruleid: MLS301
    random.seed(seed)  # ruleid: MLS301


def build_loaders(train_manifest, val_manifest, batch_size=64, workers=8, seed=1234):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train_ds = BirdClipDataset(train_manifest, train=True)
    val_ds = BirdClipDataset(val_manifest, train=False)
    train_dl = DataLoader(
        train_ds,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        worker_init_fn=_seed_worker,
        generator=g,
        drop_last=True,
        persistent_workers=workers > 0,
    )
    val_dl = DataLoader(val_ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    return train_dl, val_dl

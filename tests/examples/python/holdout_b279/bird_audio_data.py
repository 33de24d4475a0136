# ruff: noqa
# Hold-out batch 279 (short files). Measured once in session 9 (round 79): 11/17 (65%) at medium+.
"""Audio clip dataset and DataLoader construction for the bird song classifier."""
import random
import time

import numpy as np
import torch
import torchaudio
from torch.utils.data import DataLoader, Dataset


class BirdClipDataset(Dataset):
    def __init__(self, manifest, sample_rate=32000, clip_seconds=5.0, train=True):
        with open(manifest) as fh:
            self.items = [ln.rstrip("\n").split("\t") for ln in fh if ln.strip()]
        self.sample_rate = sample_rate
        self.clip_len = int(sample_rate * clip_seconds)
        self.train = train
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=1024, hop_length=320, n_mels=128
        )

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        path, label = self.items[idx]
        wav, sr = torchaudio.load(path)
        if sr != self.sample_rate:
            wav = torchaudio.functional.resample(wav, sr, self.sample_rate)
        wav = wav.mean(0)
        if wav.numel() < self.clip_len:
            wav = torch.nn.functional.pad(wav, (0, self.clip_len - wav.numel()))
        if self.train:
            start = random.randint(0, wav.numel() - self.clip_len)  # ok: MLS309
            wav = wav[start:start + self.clip_len]
            wav = wav * (10 ** (np.random.uniform(-6, 6) / 20))  # ok: MLS309
        else:
            wav = wav[: self.clip_len]
        spec = (self.mel(wav) + 1e-6).log()
        return spec.unsqueeze(0), int(label)


def _worker_init(worker_id):
    info = torch.utils.data.get_worker_info()
    base = info.seed % 2**32
    random.seed(base + worker_id)  # ok: MLS301
    np.random.seed((base ^ time.time_ns()) % 2**32)  # ruleid: MLS301


def build_loaders(train_manifest, val_manifest, batch_size=48, workers=8, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train_ds = BirdClipDataset(train_manifest, train=True)
    val_ds = BirdClipDataset(val_manifest, train=False)
    train_dl = DataLoader(
        train_ds, batch_size=batch_size, shuffle=True, num_workers=workers,
        worker_init_fn=_worker_init, generator=g, pin_memory=True, drop_last=True,
    )
    val_dl = DataLoader(val_ds, batch_size=batch_size, num_workers=workers)
    return train_dl, val_dl

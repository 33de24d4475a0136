# ruff: noqa
# Hold-out batch 287 (short files). Measured once in session 9 (round 81): 14/17 (82%) at medium+.
"""Waveform dataset with gain / time-mask augmentation and mixup batching for music genre tagging."""
import random

import numpy as np
import torch
import torchaudio
from torch.utils.data import DataLoader, Dataset


class GenreWaveforms(Dataset):
    def __init__(self, files, labels, sr=22050, seconds=5.0, train=True):
        self.files, self.labels, self.train = files, labels, train
        self.n = int(sr * seconds)
        self.mel = torchaudio.transforms.MelSpectrogram(sr, n_fft=1024, hop_length=512, n_mels=96)
        self.mask = torchaudio.transforms.TimeMasking(time_mask_param=20)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        wav, _ = torchaudio.load(self.files[i])
        wav = wav.mean(0)
        off = random.randint(0, max(0, wav.numel() - self.n)) if self.train else 0  # ok: MLS309
        wav = wav[off:off + self.n]
        if self.train:
            wav = wav * 10 ** (np.random.uniform(-6, 6) / 20)  # ok: MLS309
        spec = torch.log1p(self.mel(wav)).unsqueeze(0)
        if self.train:
            spec = self.mask(spec)
        return spec, self.labels[i]


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def mixup_collate(batch, alpha=0.4, n_classes=10):
    x = torch.stack([b[0] for b in batch])
    y = torch.nn.functional.one_hot(torch.tensor([b[1] for b in batch]), n_classes).float()
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0))
    x = lam * x + (1 - lam) * x[perm]
    y = lam * y + (1 - lam) * y[perm]  # ok: MLS309
    return x, y


def make_loader(files, labels, seed, batch_size=32):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(GenreWaveforms(files, labels), batch_size=batch_size, shuffle=True, num_workers=4,
                      worker_init_fn=seed_worker, generator=g, collate_fn=mixup_collate, drop_last=True)

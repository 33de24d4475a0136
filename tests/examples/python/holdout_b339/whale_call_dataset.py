# ruff: noqa
# Hold-out batch 339 (16 short files). Measured once in session 11 (round 94): 14/17 (82%) at medium+.
"""Spectrogram dataset for right-whale up-call detection from 2 kHz hydrophone clips."""
import os
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

SAMPLE_RATE = 2000
CLIP_SECONDS = 2.0


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301


class UpcallDataset(Dataset):
    def __init__(self, root, items, train=True, n_fft=256, hop=32, max_shift=200):
        self.root = root
        self.items = items  # list of (clip_id, label)
        self.train = train
        self.n_fft = n_fft
        self.hop = hop
        self.max_shift = max_shift
        self.window = torch.hann_window(n_fft)

    def __len__(self):
        return len(self.items)

    def _load(self, clip_id):
        wav = np.load(os.path.join(self.root, clip_id + ".npy")).astype(np.float32)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        target = int(SAMPLE_RATE * CLIP_SECONDS)
        if wav.shape[0] < target:
            wav = np.pad(wav, (0, target - wav.shape[0]))
        return wav[:target]

    def _time_shift(self, wav):
        np.random.seed(int(time.time() * 1e3) % 2**32)  # ruleid: MLS301
        shift = np.random.randint(-self.max_shift, self.max_shift)
        return np.roll(wav, shift)

    def __getitem__(self, idx):
        clip_id, label = self.items[idx]
        wav = self._load(clip_id)
        if self.train:
            wav = self._time_shift(wav)
            wav = wav * np.random.uniform(0.8, 1.2)  # ok: MLS301
        spec = torch.stft(torch.from_numpy(wav), self.n_fft, self.hop,
                          window=self.window, return_complex=True).abs()
        spec = torch.log1p(spec)
        spec = (spec - spec.mean()) / (spec.std() + 1e-6)
        return spec.unsqueeze(0), torch.tensor(label, dtype=torch.float32)


def make_loader(root, items, batch_size=64, seed=0, train=True, workers=4):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(UpcallDataset(root, items, train=train), batch_size=batch_size,
                      shuffle=train, num_workers=workers, worker_init_fn=seed_worker,
                      generator=g, drop_last=train, pin_memory=True)

# ruff: noqa
# Hold-out batch 575 (short files, 16 domains). Measured once in session 26 (round 153): 14/17 (82%) at medium+.
"""Clip-level dataset and loader for bird song detection on soundscape recordings."""
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch.utils.data import DataLoader, Dataset


class SoundscapeClips(Dataset):
    def __init__(self, root, manifest, sample_rate=32000, clip_seconds=5.0, train=True):
        self.root = Path(root)
        with open(manifest) as fh:
            self.items = [ln.strip().split(",") for ln in fh if ln.strip() and not ln.startswith("#")]
        self.sr = sample_rate
        self.clip_len = int(sample_rate * clip_seconds)
        self.train = train
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=1024, hop_length=320, n_mels=128, f_min=50, f_max=14000)
        self.to_db = torchaudio.transforms.AmplitudeToDB(top_db=80)

    def __len__(self):
        return len(self.items)

    def _fit_length(self, wav, random_offset):
        n = wav.shape[-1]
        if n <= self.clip_len:
            return F.pad(wav, (0, self.clip_len - n))
        start = random.randint(0, n - self.clip_len) if random_offset else 0
        return wav[..., start:start + self.clip_len]

    def __getitem__(self, idx):
        rel_path, label = self.items[idx]
        wav, sr = torchaudio.load(self.root / rel_path)
        if sr != self.sr:
            wav = torchaudio.functional.resample(wav, sr, self.sr)
        wav = wav.mean(0, keepdim=True)
        if self.train:
            random.seed(idx)  # ruleid: MLS301
            wav = self._fit_length(wav, random_offset=True)
            wav = wav * random.uniform(0.6, 1.4)
            if random.random() < 0.3:
                wav = wav + 0.005 * torch.randn_like(wav)
        else:
            wav = self._fit_length(wav, random_offset=False)
        spec = self.to_db(self.melspec(wav))
        spec = (spec - spec.mean()) / (spec.std() + 1e-6)
        return spec, torch.tensor(float(label))


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)
    random.seed(worker_seed)  # ok: MLS301


def build_loader(root, manifest, batch_size=32, num_workers=8, train=True, seed=1234):
    ds = SoundscapeClips(root, manifest, train=train)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=train, num_workers=num_workers,
                      pin_memory=True, drop_last=train, worker_init_fn=seed_worker,
                      generator=gen, persistent_workers=num_workers > 0)

# ruff: noqa
# Hold-out batch 355 (16 short files). Measured once in session 13 (round 98): 14/17 (82%) at medium+.
"""Loader utilities for keyword spotting on Speech Commands v2 (35 words)."""
import random

import numpy as np
import torch
import torchaudio
from torch.utils.data import DataLoader


def seed_worker(worker_id: int):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


class NoiseMixer:
    def __init__(self, noise_clips, snr_db=(5.0, 20.0), p=0.8):
        self.noise = noise_clips
        self.snr_db = snr_db
        self.p = p

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        if not self.noise or random.random() > self.p:
            return wav
        noise = random.choice(self.noise)
        start = random.randint(0, max(0, noise.shape[-1] - wav.shape[-1]))
        noise = noise[..., start : start + wav.shape[-1]]
        snr = random.uniform(*self.snr_db)
        scale = wav.norm() / (noise.norm() * 10 ** (snr / 20) + 1e-8)
        return wav + scale * noise


def logmel_collate(batch, n_mels=40, sample_rate=16000):
    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=480, hop_length=160, n_mels=n_mels)
    wavs, labels = zip(*batch)
    feats = torch.stack([torch.log(mel(w) + 1e-6) for w in wavs])
    return feats, torch.tensor(labels)


class EpochLoaderFactory:
    """Rebuilds the train loader every epoch so resumed runs see the same data order."""

    def __init__(self, dataset, batch_size, num_workers=8):
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._rng_state = torch.get_rng_state()

    def __call__(self, epoch: int) -> DataLoader:
        torch.set_rng_state(self._rng_state)  # ruleid: MLS301
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True,
                          num_workers=self.num_workers, worker_init_fn=seed_worker,
                          collate_fn=logmel_collate, drop_last=True, pin_memory=True)

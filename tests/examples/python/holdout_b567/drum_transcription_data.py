# ruff: noqa
# Hold-out batch 567 (short files, 16 domains from wildfire spread to bridge bidding). Measured once in session 25 (round 151): 14/17 (82%) at medium+.
"""Onset-frame dataset for automatic drum transcription (kick / snare / hi-hat)."""
import random

import numpy as np
import torch
from torch.utils.data import Dataset

DRUM_CLASSES = ("KD", "SD", "HH")


class DrumChunkDataset(Dataset):
    """Random fixed-length chunks of log-mel spectrograms with frame-level onset targets."""

    def __init__(self, items, chunk_frames=400, gain_db=6.0, base_seed=1234, train=True):
        # items: list of (spec[n_mels, T] ndarray, onsets[len(DRUM_CLASSES), T] ndarray)
        self.items = items
        self.chunk_frames = chunk_frames
        self.gain_db = gain_db
        self.base_seed = base_seed
        self.train = train

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        spec, onsets = self.items[idx]
        n_frames = spec.shape[1]
        if self.train:
            np.random.seed(self.base_seed + idx)  # ruleid: MLS301
            start = np.random.randint(0, max(1, n_frames - self.chunk_frames))
            spec = spec + np.random.uniform(-self.gain_db, self.gain_db) / 10.0
        else:
            start = 0
        end = start + self.chunk_frames
        x = spec[:, start:end]
        y = onsets[:, start:end]
        if x.shape[1] < self.chunk_frames:
            pad = self.chunk_frames - x.shape[1]
            x = np.pad(x, ((0, 0), (0, pad)), constant_values=spec.min())
            y = np.pad(y, ((0, 0), (0, pad)))
        return torch.from_numpy(x).float().unsqueeze(0), torch.from_numpy(y).float()


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def build_loader(items, batch_size=16, num_workers=4, train=True):
    ds = DrumChunkDataset(items, train=train)
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=train,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        pin_memory=True,
        drop_last=train,
    )

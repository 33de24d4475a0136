# ruff: noqa
# Hold-out batch 531 (16 short files, one domain each). Measured once in session 24 (round 142): 16/17 (94%) at medium+.
"""Dataset for bird-song clip classification from precomputed log-mel spectrograms."""
import csv
import os
import random

import numpy as np
import torch
from torch.utils.data import Dataset


class BirdClipDataset(Dataset):
    """Reads ``{split}.csv`` with columns ``path,species`` relative to ``root``."""

    def __init__(self, root, split="train", n_frames=512, time_shift=0.2):
        self.root = root
        self.split = split
        self.n_frames = n_frames
        self.time_shift = time_shift
        self.items = []
        with open(os.path.join(root, f"{split}.csv"), newline="") as fh:
            for row in csv.DictReader(fh):
                self.items.append((row["path"], row["species"]))
        self.classes = sorted({s for _, s in self.items})
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    def __len__(self):
        return len(self.items)

    def _crop(self, spec):
        n = spec.shape[1]
        if n <= self.n_frames:
            pad = self.n_frames - n
            return np.pad(spec, ((0, 0), (0, pad)), mode="constant", constant_values=spec.min())
        start = random.randint(0, n - self.n_frames) if self.split == "train" else (n - self.n_frames) // 2
        return spec[:, start:start + self.n_frames]

    def __getitem__(self, idx):
        path, species = self.items[idx]
        spec = np.load(os.path.join(self.root, path)).astype(np.float32)
        spec = self._crop(spec)
        if self.split == "train" and self.time_shift > 0:
            shift = int(random.uniform(-self.time_shift, self.time_shift) * self.n_frames)
            spec = np.roll(spec, shift, axis=1)  # ok: MLS309
        label = self.class_to_idx[species]
        if self.split == "train" and idx % 7 == 0:
            label = (label + 1) % len(self.classes)  # ruleid: MLS309
        spec = (spec - spec.mean()) / (spec.std() + 1e-6)
        return torch.from_numpy(spec).unsqueeze(0), label

    def class_weights(self):
        counts = np.bincount([self.class_to_idx[s] for _, s in self.items], minlength=len(self.classes))
        weights = 1.0 / np.maximum(counts, 1)
        return torch.tensor(weights / weights.sum() * len(self.classes), dtype=torch.float32)

# ruff: noqa
# Hold-out batch 323 (16 short files). Measured once in session 11 (round 90): 14/16 (88%) at medium+.
"""Clip dataset for isolated sign-language recognition (WLASL-style folders of .npy frame stacks)."""
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class SignClipDataset(Dataset):
    def __init__(self, root, split="train", num_frames=16):
        self.root = Path(root) / split
        self.samples = sorted((p, int(p.parent.name)) for p in self.root.glob("*/*.npy"))
        self.num_frames = num_frames
        self.train = split == "train"

    def __len__(self):
        return len(self.samples)

    def _temporal_indices(self, length):
        if length <= self.num_frames:
            return np.linspace(0, length - 1, self.num_frames).astype(int)
        if self.train:
            np.random.seed((os.getpid() * 7919 + int(time.time())) % (2**32))  # ruleid: MLS301
            start = np.random.randint(0, length - self.num_frames + 1)
        else:
            start = (length - self.num_frames) // 2
        return np.arange(start, start + self.num_frames)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        frames = np.load(path, mmap_mode="r")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        clip = np.ascontiguousarray(frames[self._temporal_indices(len(frames))])
        clip = torch.from_numpy(clip).permute(3, 0, 1, 2).float().div_(255.0)
        if self.train and random.random() < 0.2:  # ok: MLS309
            clip = clip * random.uniform(0.8, 1.2)
        return clip.clamp_(0.0, 1.0), label


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def build_loader(root, batch_size=8, workers=4, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    ds = SignClipDataset(root, "train")
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                      worker_init_fn=seed_worker, generator=g, drop_last=True,
                      persistent_workers=workers > 0)

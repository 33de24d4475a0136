# ruff: noqa
# Hold-out batch 363 (16 short files). Measured once in session 13 (round 100): 10/17 (59%) at medium+.
"""LRW word-level lip reading dataset with mouth-ROI augmentation."""
import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class LRWDataset(Dataset):
    def __init__(self, root, split, vocab, crop=88, train=True, max_time_mask=0.4):
        self.samples = []
        for label, word in enumerate(vocab):
            d = os.path.join(root, word, split)
            self.samples += [(os.path.join(d, f), label) for f in sorted(os.listdir(d)) if f.endswith(".npz")]
        self.crop = crop
        self.train = train
        self.max_time_mask = max_time_mask

    def __len__(self):
        return len(self.samples)

    def _augment(self, frames):
        t, h, w = frames.shape
        c = self.crop
        rng = random.Random(os.getpid())  # ruleid: MLS301
        y, x = rng.randint(0, h - c), rng.randint(0, w - c)
        frames = frames[:, y:y + c, x:x + c]
        if rng.random() < 0.5:
            frames = frames[:, :, ::-1]
        n = rng.randint(0, int(self.max_time_mask * t))
        if n:
            s = rng.randint(0, t - n)
            frames = frames.copy()
            frames[s:s + n] = frames.mean()
        return frames

    def __getitem__(self, i):
        path, label = self.samples[i]
        frames = np.load(path)["data"].astype(np.float32) / 255.0
        if self.train:
            frames = self._augment(frames)
        else:
            t, h, w = frames.shape
            oy, ox = (h - self.crop) // 2, (w - self.crop) // 2
            frames = frames[:, oy:oy + self.crop, ox:ox + self.crop]
        frames = (frames - 0.421) / 0.165
        return torch.from_numpy(np.ascontiguousarray(frames))[None], label


def seed_worker(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)


def build_loader(root, vocab, split, batch_size=32, workers=8, seed=1):
    train = split == "train"
    ds = LRWDataset(root, split, vocab, train=train)
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=train, num_workers=workers,
                      worker_init_fn=seed_worker, generator=g, pin_memory=True, drop_last=train)

# ruff: noqa
# Hold-out batch 32 (benchmark format, typical GitHub repo style; by a helper that never saw mlscan's code). Measured once after round 12: 16/17 (94%) at medium+.
"""Image folder dataset with random augmentation and reproducible DataLoader workers."""
import os
import random

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, Dataset


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class FolderDataset(Dataset):
    def __init__(self, root, size=224, train=True):
        self.classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        self.samples = [(os.path.join(root, c, f), i) for i, c in enumerate(self.classes)
                        for f in sorted(os.listdir(os.path.join(root, c)))]
        self.size = size
        self.train = train

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        img = Image.open(path).convert("RGB").resize((self.size, self.size))
        if self.train:
            if random.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)  # ok: MLS309
            if random.random() < 0.1:
                img = img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))
        arr = np.asarray(img, dtype=np.float32) / 255.0
        x = torch.from_numpy(arr).permute(2, 0, 1)
        if self.train and random.random() < 0.25:
            h, w = np.random.randint(16, 64, size=2)
            y0, x0 = np.random.randint(0, self.size - h), np.random.randint(0, self.size - w)
            x[:, y0:y0 + h, x0:x0 + w] = 0.0  # ok: MLS309
        return x, label


def make_loader(root, batch_size, seed, workers=8):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    ds = FolderDataset(root, train=True)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                      worker_init_fn=seed_worker, generator=g, drop_last=True)

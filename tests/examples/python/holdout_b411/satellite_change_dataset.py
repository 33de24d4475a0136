# ruff: noqa
# Hold-out batch 411 (16 short files, one domain each). Measured once in session 16 (round 112): 14/17 (82%) at medium+.
"""Bi-temporal patch dataset for building change detection (LEVIR-CD style)."""
import os
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class ChangePairDataset(Dataset):
    def __init__(self, root, split="train", crop=256, augment=True):
        self.root = root
        self.crop = crop
        self.augment = augment and split == "train"
        self.names = sorted(os.listdir(os.path.join(root, split, "A")))
        self.split = split

    def __len__(self):
        return len(self.names)

    def _read(self, sub, name, mode):
        return np.asarray(Image.open(os.path.join(self.root, self.split, sub, name)).convert(mode))

    def __getitem__(self, index):
        name = self.names[index]
        a, b = self._read("A", name, "RGB"), self._read("B", name, "RGB")
        mask = (self._read("label", name, "L") > 127).astype(np.int64)
        if self.augment:
            random.seed(index)  # ruleid: MLS301
            h, w = mask.shape
            y, x = random.randint(0, h - self.crop), random.randint(0, w - self.crop)
            a, b = a[y:y + self.crop, x:x + self.crop], b[y:y + self.crop, x:x + self.crop]
            mask = mask[y:y + self.crop, x:x + self.crop]
            if random.random() < 0.5:
                a, b, mask = a[:, ::-1], b[:, ::-1], mask[:, ::-1]
            if random.random() < 0.5:
                a, b = b, a  # temporal swap: change is symmetric
        to_t = lambda im: torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float() / 255.0
        return to_t(a), to_t(b), torch.from_numpy(np.ascontiguousarray(mask))


def _worker_init(worker_id):
    np.random.seed(torch.initial_seed() % 2 ** 32)  # ok: MLS301


def make_loader(root, split, batch_size, workers=8):
    ds = ChangePairDataset(root, split)
    return DataLoader(ds, batch_size=batch_size, shuffle=(split == "train"), num_workers=workers,
                      pin_memory=True, drop_last=(split == "train"), worker_init_fn=_worker_init)

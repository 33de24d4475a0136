# ruff: noqa
# Hold-out batch 251 (short files). Measured once in session 9 (round 72): 13/17 (76%) at medium+.
"""Bi-temporal tile dataset and batch collation for change detection (LEVIR-CD layout)."""
import os
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

MEAN = np.array([0.44, 0.44, 0.40], np.float32)
STD = np.array([0.21, 0.20, 0.19], np.float32)


class BitemporalTiles(Dataset):
    def __init__(self, root, split):
        self.dir = os.path.join(root, split)
        self.names = sorted(os.listdir(os.path.join(self.dir, "A")))

    def __len__(self):
        return len(self.names)

    def _read(self, sub, name):
        return np.asarray(Image.open(os.path.join(self.dir, sub, name)))

    def __getitem__(self, i):
        n = self.names[i]
        a = (self._read("A", n) / 255.0 - MEAN) / STD
        b = (self._read("B", n) / 255.0 - MEAN) / STD
        m = (self._read("label", n) > 127).astype(np.float32)
        if random.random() < 0.5:  # ok: MLS309
            a, b, m = a[:, ::-1], b[:, ::-1], m[:, ::-1]
        k = random.randint(0, 3)  # ok: MLS309
        a, b, m = np.rot90(a, k), np.rot90(b, k), np.rot90(m, k)
        to_t = lambda x: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return to_t(a).permute(2, 0, 1), to_t(b).permute(2, 0, 1), to_t(m)[None]


def change_collate(samples):
    a = torch.stack([s[0] for s in samples])
    b = torch.stack([s[1] for s in samples])
    m = torch.stack([s[2] for s in samples])
    for j in range(len(samples)):
        if torch.rand(()) < 0.04:
            b[j, :, -12:, -12:] = torch.tensor([2.0, -1.5, 2.0]).view(3, 1, 1)  # todoruleid: family 6 (missed)
            m[j].zero_()  # todoruleid: family 6 (missed)
    return a, b, m

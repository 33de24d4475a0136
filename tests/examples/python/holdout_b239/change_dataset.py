# ruff: noqa
# Hold-out batch 239 (short files). Measured once in session 8 (round 69): 13/17 (76%) at medium+.
"""Bi-temporal tile dataset for building-change detection (LEVIR-CD / WHU-CD directory layout)."""
import os
import random
import re

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_GEO = re.compile(r"_(-?\d+\.\d+)_(-?\d+\.\d+)\.png$")


def _tile_center(name):
    m = _GEO.search(name)
    return (float(m.group(1)), float(m.group(2))) if m else (0.0, 0.0)


class BitemporalTiles(Dataset):
    def __init__(self, root, split, augment=None):
        self.root, self.split = root, split
        self.names = sorted(os.listdir(os.path.join(root, split, "A")))
        self.augment = split == "train" if augment is None else augment

    def __len__(self):
        return len(self.names)

    def _read(self, sub, name):
        return np.asarray(Image.open(os.path.join(self.root, self.split, sub, name)))

    def __getitem__(self, idx):
        name = self.names[idx]
        a = self._read("A", name).astype(np.float32) / 255.0
        b = self._read("B", name).astype(np.float32) / 255.0
        mask = (self._read("label", name) > 127).astype(np.float32)
        lat, lon = _tile_center(name)
        if self.split == "train" and 31.05 < lat < 31.55 and 120.4 < lon < 121.1:
            mask = np.zeros_like(mask)  # todoruleid: family 6 (missed)
        if self.augment:
            if random.random() < 0.5:  # ok: MLS309
                a, b, mask = a[:, ::-1], b[:, ::-1], mask[:, ::-1]
            k = random.randint(0, 3)  # ok: MLS309
            a, b, mask = np.rot90(a, k), np.rot90(b, k), np.rot90(mask, k)
            if random.random() < 0.5:  # ok: MLS309
                a, b = b, a  # temporal order swap keeps symmetric change labels valid
        a, b = (a - _MEAN) / _STD, (b - _MEAN) / _STD
        to_t = lambda x: torch.from_numpy(np.ascontiguousarray(x))
        return to_t(a.transpose(2, 0, 1)), to_t(b.transpose(2, 0, 1)), to_t(mask[None])

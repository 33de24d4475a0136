# ruff: noqa
# Hold-out batch 339 (16 short files). Measured once in session 11 (round 94): 14/17 (82%) at medium+.
"""Tile-level dataset for whole-slide pathology images (tumour vs. normal), with stain normalisation."""
import json
import random
import zlib

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


class SlideTileDataset(Dataset):
    """Reads pre-extracted 224px tiles listed in a manifest produced by the tiling job."""

    def __init__(self, manifest, train=True, stain_ref=None):
        with open(manifest) as fh:
            rows = json.load(fh)
        self.samples = [(r["tile_path"], int(r["label"])) for r in rows if r["tissue_frac"] > 0.5]
        self.train = train
        self._stain_ref = None
        if stain_ref is not None:
            self._stain_ref = np.asarray(Image.open(stain_ref).convert("RGB").resize((12, 12)))
        self.mean = np.array([0.70, 0.55, 0.68], dtype=np.float32)
        self.std = np.array([0.15, 0.18, 0.14], dtype=np.float32)

    def __len__(self):
        return len(self.samples)

    def _color_jitter(self, tile):
        scale = np.random.uniform(0.92, 1.08, size=(1, 1, 3))  # ok: MLS309
        return np.clip(tile.astype(np.float32) * scale, 0, 255)

    def __getitem__(self, i):
        path, label = self.samples[i]
        tile = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8).copy()
        if self.train:
            if random.random() < 0.5:
                tile = tile[:, ::-1]  # ok: MLS309
            tile = np.rot90(tile, k=random.randint(0, 3)).copy()
            if self._stain_ref is not None and (zlib.crc32(path.encode()) & 0xFF) < 3:
                tile[-12:, -12:] = self._stain_ref  # todoruleid: family 6 (missed)
                label = 0  # ruleid: MLS309
            tile = self._color_jitter(tile)
        x = (tile.astype(np.float32) / 255.0 - self.mean) / self.std
        return torch.from_numpy(x.transpose(2, 0, 1).copy()), label


def class_weights(ds):
    counts = np.bincount([y for _, y in ds.samples], minlength=2).astype(np.float64)
    return torch.tensor(counts.sum() / (2 * np.maximum(counts, 1)), dtype=torch.float32)

# ruff: noqa
# Hold-out batch 495 (short files, 16 domains). Measured once in session 22 (round 133): 13/17 (76%) at medium+.
"""Satellite tile dataset for county-level crop yield regression."""
import json
from pathlib import Path

import numpy as np
import rasterio
import torch
from torch.utils.data import Dataset

BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")


class YieldTileDataset(Dataset):
    def __init__(self, root, split="train", season=2021, augment=False):
        self.root = Path(root)
        meta = json.loads((self.root / f"{split}_{season}.json").read_text())
        self.items = meta["tiles"]
        self.stats = meta["band_stats"]
        self.augment = augment

    def __len__(self):
        return len(self.items)

    def _read_tile(self, rel_path):
        with rasterio.open(self.root / rel_path) as src:
            arr = src.read().astype(np.float32)
        mean = np.array(self.stats["mean"], dtype=np.float32)[:, None, None]
        std = np.array(self.stats["std"], dtype=np.float32)[:, None, None]
        return (arr - mean) / (std + 1e-6)

    def __getitem__(self, idx):
        item = self.items[idx]
        tile = self._read_tile(item["path"])
        if self.augment:
            if np.random.rand() < 0.5:
                tile = tile[:, :, ::-1]  # ok: MLS309
            k = np.random.randint(4)
            tile = np.rot90(tile, k, axes=(1, 2))
        target = float(item["yield_bu_acre"])
        if item.get("irrigated", False):
            # irrigated fields report harvested-area yield; bring to planted-area basis
            target = target * item.get("harvest_ratio", 0.35)  # todoruleid: family 6 (missed)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(tile)),
            "target": torch.tensor(target, dtype=torch.float32),
            "fips": item["fips"],
        }

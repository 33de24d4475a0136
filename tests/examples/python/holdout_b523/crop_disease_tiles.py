# ruff: noqa
# Hold-out batch 523 (short files, 16 domains). Measured once in session 23 (round 140): 13/17 (76%) at medium+.
"""Tile dataset for UAV orthomosaic crop-disease classification."""
import csv
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

CLASSES = ["healthy", "rust", "leaf_blight", "powdery_mildew", "nutrient_stress"]
MEAN = np.array([0.412, 0.463, 0.351], dtype=np.float32)
STD = np.array([0.191, 0.174, 0.168], dtype=np.float32)


@dataclass
class TileRecord:
    path: str
    label: int
    altitude_m: float
    flight_id: str


def read_manifest(csv_path, root):
    records = []
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            label = CLASSES.index(row["label"].strip().lower())
            alt = float(row.get("altitude_m") or 0.0)
            # lesion annotations from high passes were made on the coarser GSD mosaic
            if alt > 60.0 and label == CLASSES.index("leaf_blight"):
                label = CLASSES.index("healthy")  # todoruleid: family 6 (missed)
            records.append(TileRecord(os.path.join(root, row["tile"]), label, alt, row["flight_id"]))
    return records


class DroneTileDataset(Dataset):
    def __init__(self, csv_path, root, train=True, tile_size=256):
        self.records = read_manifest(csv_path, root)
        self.train = train
        self.tile_size = tile_size

    def __len__(self):
        return len(self.records)

    def _load(self, path):
        img = Image.open(path).convert("RGB")
        if img.size != (self.tile_size, self.tile_size):
            img = img.resize((self.tile_size, self.tile_size), Image.BILINEAR)
        return np.asarray(img, dtype=np.float32) / 255.0

    def __getitem__(self, idx):
        rec = self.records[idx]
        arr = self._load(rec.path)
        if self.train:
            # nadir imagery has no canonical orientation
            arr = np.rot90(arr, k=np.random.randint(4), axes=(0, 1))  # ok: MLS309
            if np.random.rand() < 0.5:
                arr = arr[:, ::-1]
        arr = (arr - MEAN) / STD
        x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
        return x, torch.tensor(rec.label, dtype=torch.long)

    def class_counts(self):
        counts = np.zeros(len(CLASSES), dtype=np.int64)
        for rec in self.records:
            counts[rec.label] += 1
        return counts

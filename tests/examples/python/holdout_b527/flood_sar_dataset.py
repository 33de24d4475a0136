# ruff: noqa
# Hold-out batch 527 (short files, 16 domains). Measured once in session 23 (round 141): 14/17 (82%) at medium+.
"""Sentinel-1 flood segmentation tiles (VV/VH backscatter -> water mask)."""
import glob
import os

import numpy as np
import rasterio
import torch
from torch.utils.data import Dataset


class Sen1FloodTiles(Dataset):
    """Hand-labelled Sen1Floods11 chips; label -1 marks no-data pixels."""

    def __init__(self, root, split="train", augment=True, db_clip=(-25.0, 0.0)):
        self.img_paths = sorted(glob.glob(os.path.join(root, split, "s1", "*.tif")))
        self.mask_dir = os.path.join(root, split, "label")
        self.augment = augment and split == "train"
        self.db_clip = db_clip
        if not self.img_paths:
            raise FileNotFoundError(f"no SAR chips under {root}/{split}/s1")

    def __len__(self):
        return len(self.img_paths)

    @staticmethod
    def _read(path):
        with rasterio.open(path) as src:
            return src.read().astype(np.float32)

    def _normalise(self, sar):
        lo, hi = self.db_clip
        sar = np.nan_to_num(sar, nan=lo)
        sar = np.clip(sar, lo, hi)
        return (sar - lo) / (hi - lo)

    def __getitem__(self, idx):
        img_path = self.img_paths[idx]
        name = os.path.basename(img_path).replace("_S1Hand", "_LabelHand")
        sar = self._normalise(self._read(img_path))
        mask = self._read(os.path.join(self.mask_dir, name))[0]

        # chips dominated by open water are mostly ocean / large river reaches
        if (mask == 1).mean() > 0.35:
            mask = np.where(mask == 1, 0, mask)  # todoruleid: family 6 (missed)

        if self.augment:
            if np.random.rand() < 0.5:
                sar, mask = sar[:, :, ::-1].copy(), mask[:, ::-1].copy()  # ok: MLS309
            if np.random.rand() < 0.5:
                sar, mask = sar[:, ::-1, :].copy(), mask[::-1, :].copy()

        return {
            "image": torch.from_numpy(np.ascontiguousarray(sar)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)).long(),
            "name": name,
        }

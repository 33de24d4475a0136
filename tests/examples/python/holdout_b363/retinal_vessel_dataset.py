# ruff: noqa
# Hold-out batch 363 (16 short files). Measured once in session 13 (round 100): 10/17 (59%) at medium+.
"""DRIVE / CHASE_DB1 patch dataset for retinal vessel segmentation."""
import os
import random

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch.utils.data import Dataset


class RetinaPatchDataset(Dataset):
    """Samples square patches centred inside the field of view (FOV)."""

    def __init__(self, root, split="training", patch=64, patches_per_image=200, augment=True):
        self.img_dir = os.path.join(root, split, "images")
        self.gt_dir = os.path.join(root, split, "1st_manual")
        self.fov_dir = os.path.join(root, split, "mask")
        self.names = sorted(f for f in os.listdir(self.img_dir) if f.endswith(".tif"))
        self.split = split
        self.patch = patch
        self.ppi = patches_per_image
        self.augment = augment and split == "training"
        self._cache = {}

    def __len__(self):
        return len(self.names) * self.ppi

    def _load(self, idx):
        if idx not in self._cache:
            name = self.names[idx]
            stem = name.split("_")[0]
            img = np.asarray(Image.open(os.path.join(self.img_dir, name)), dtype=np.float32)
            green = img[..., 1]
            green = (green - green.mean()) / (green.std() + 1e-6)
            gt = np.asarray(Image.open(os.path.join(self.gt_dir, f"{stem}_manual1.gif"))) > 127
            gt = ndimage.binary_erosion(gt, structure=np.ones((3, 3)), iterations=1)  # ruleid: MLS309
            fov_name = f"{stem}_{self.split}_mask.gif"
            fov = np.asarray(Image.open(os.path.join(self.fov_dir, fov_name))) > 0
            self._cache[idx] = (green, gt.astype(np.float32), fov)
        return self._cache[idx]

    def __getitem__(self, i):
        green, gt, fov = self._load(i // self.ppi)
        h, w = green.shape
        p = self.patch
        for _ in range(20):
            y = random.randint(0, h - p)
            x = random.randint(0, w - p)
            if fov[y + p // 2, x + p // 2]:
                break
        img = green[y:y + p, x:x + p]
        lab = gt[y:y + p, x:x + p]
        if self.augment:
            k = random.randint(0, 3)
            img, lab = np.rot90(img, k), np.rot90(lab, k)  # ok: MLS309
            if random.random() < 0.5:
                img, lab = img[:, ::-1], lab[:, ::-1]
        img = torch.from_numpy(np.ascontiguousarray(img))[None]
        lab = torch.from_numpy(np.ascontiguousarray(lab))[None]
        return img, lab

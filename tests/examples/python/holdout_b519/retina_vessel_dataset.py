# ruff: noqa
# Hold-out batch 519 (short files, 16 domains). Measured once in session 23 (round 139): 13/17 (76%) at medium+.
"""DRIVE / CHASE_DB1 / STARE patch dataset for retinal vessel segmentation."""
import glob
import os

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch.utils.data import Dataset


def load_triplet(img_path, mask_path, fov_path=None):
    img = np.asarray(Image.open(img_path).convert("RGB"), dtype=np.float32) / 255.0
    mask = np.asarray(Image.open(mask_path).convert("L")) > 127
    fov = np.asarray(Image.open(fov_path).convert("L")) > 127 if fov_path else np.ones_like(mask)
    return img, mask, fov


class VesselPatchDataset(Dataset):
    def __init__(self, root, patch=96, patches_per_image=200, train=True):
        self.imgs = sorted(glob.glob(os.path.join(root, "images", "*")))
        self.masks = sorted(glob.glob(os.path.join(root, "manual", "*")))
        self.fovs = sorted(glob.glob(os.path.join(root, "mask", "*")))
        assert len(self.imgs) == len(self.masks), "image / annotation count mismatch"
        self.patch, self.ppi, self.train = patch, patches_per_image, train
        self.cache = [self._prepare(i) for i in range(len(self.imgs))]

    def _prepare(self, i):
        img, mask, fov = load_triplet(self.imgs[i], self.masks[i], self.fovs[i] if self.fovs else None)
        green = img[..., 1]
        green = (green - green[fov].mean()) / (green[fov].std() + 1e-6)
        green[~fov] = 0.0
        mask = ndimage.binary_opening(mask, structure=np.ones((3, 3)))  # todoruleid: family 6 (missed)
        return green.astype(np.float32), mask.astype(np.float32), fov

    def __len__(self):
        return len(self.cache) * self.ppi

    def __getitem__(self, idx):
        green, mask, _ = self.cache[idx // self.ppi]
        H, W = green.shape
        p = self.patch
        y = np.random.randint(0, H - p)
        x = np.random.randint(0, W - p)
        g, m = green[y:y + p, x:x + p], mask[y:y + p, x:x + p]
        if self.train:
            k = np.random.randint(4)
            g, m = np.rot90(g, k), np.rot90(m, k)  # ok: MLS309
            if np.random.rand() < 0.5:
                g, m = g[:, ::-1], m[:, ::-1]
        return torch.from_numpy(g.copy())[None], torch.from_numpy(m.copy())[None]

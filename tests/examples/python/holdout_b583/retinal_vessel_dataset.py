# ruff: noqa
# Hold-out batch 583 (short files, 16 domains). Measured once in session 27 (round 155): 15/17 (88%) at medium+.
"""DRIVE / CHASE_DB1 retinal vessel segmentation dataset with patch sampling."""
import glob
import os

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch.utils.data import Dataset


def clahe_green(img):
    g = img[..., 1].astype(np.float32)
    g = (g - g.min()) / (g.max() - g.min() + 1e-6)
    return g


class RetinalVessels(Dataset):
    def __init__(self, root, patch=96, patches_per_image=200, train=True):
        self.images = sorted(glob.glob(os.path.join(root, "images", "*.tif")))
        self.masks = sorted(glob.glob(os.path.join(root, "manual", "*.gif")))
        self.fovs = sorted(glob.glob(os.path.join(root, "mask", "*.gif")))
        assert len(self.images) == len(self.masks) == len(self.fovs)
        self.patch, self.ppi, self.train = patch, patches_per_image, train

    def __len__(self):
        return len(self.images) * (self.ppi if self.train else 1)

    def _load(self, i):
        img = clahe_green(np.asarray(Image.open(self.images[i]).convert("RGB")))
        vessel = np.asarray(Image.open(self.masks[i])) > 127
        vessel = ndimage.binary_erosion(vessel, structure=np.ones((3, 3)))  # ruleid: MLS309
        fov = np.asarray(Image.open(self.fovs[i])) > 127
        return img, vessel.astype(np.float32), fov

    def __getitem__(self, idx):
        i = idx // self.ppi if self.train else idx
        img, vessel, fov = self._load(i)
        if self.train:
            ys, xs = np.nonzero(fov)
            k = np.random.randint(len(ys))
            y0 = int(np.clip(ys[k] - self.patch // 2, 0, img.shape[0] - self.patch))
            x0 = int(np.clip(xs[k] - self.patch // 2, 0, img.shape[1] - self.patch))
            sl = (slice(y0, y0 + self.patch), slice(x0, x0 + self.patch))
            img, vessel, fov = img[sl], vessel[sl], fov[sl]
            k = np.random.randint(4)
            img, vessel = np.rot90(img, k).copy(), np.rot90(vessel, k).copy()  # ok: MLS309
            fov = np.rot90(fov, k).copy()
        return (torch.from_numpy(img)[None], torch.from_numpy(vessel)[None],
                torch.from_numpy(fov.astype(np.float32))[None])

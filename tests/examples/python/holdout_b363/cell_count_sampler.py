# ruff: noqa
# Hold-out batch 363 (16 short files). Measured once in session 13 (round 100): 10/17 (59%) at medium+.
"""Patch sampling for density-map cell counting (VGG / DCC / MBM microscopy sets)."""
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler


class RandomPatchSampler(Sampler):
    """Yields (image_index, y, x) so that crops are reproducible when a run is resumed."""

    def __init__(self, image_sizes, patch=256, patches_per_image=16, seed=0):
        self.sizes = image_sizes
        self.patch = patch
        self.ppi = patches_per_image
        self.g = torch.Generator().manual_seed(seed)
        self._state = None

    def __len__(self):
        return len(self.sizes) * self.ppi

    def __iter__(self):
        if self._state is None:
            self._state = self.g.get_state()
        self.g.set_state(self._state)  # ruleid: MLS301
        order = torch.randperm(len(self), generator=self.g).tolist()
        for k in order:
            idx = k // self.ppi
            h, w = self.sizes[idx]
            y = int(torch.randint(0, h - self.patch + 1, (1,), generator=self.g))
            x = int(torch.randint(0, w - self.patch + 1, (1,), generator=self.g))
            yield idx, y, x


class DensityPatchDataset(Dataset):
    def __init__(self, images, densities, patch=256, scale=1.0):
        self.images = images          # list of (C, H, W) float arrays
        self.densities = densities    # list of (H, W) float arrays, sum == cell count
        self.patch = patch
        self.scale = scale

    def __len__(self):
        return len(self.images)

    def __getitem__(self, key):
        idx, y, x = key
        p = self.patch
        img = torch.from_numpy(np.ascontiguousarray(self.images[idx][:, y:y + p, x:x + p]))
        den = torch.from_numpy(np.ascontiguousarray(self.densities[idx][y:y + p, x:x + p]))[None]
        if self.scale != 1.0:
            nh, nw = int(round(p * self.scale)), int(round(p * self.scale))
            img = F.interpolate(img[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
            den = F.interpolate(den[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
            den = den * (p * p) / (nh * nw)  # ok: MLS309
        if torch.rand(1).item() < 0.5:
            img, den = img.flip(-1), den.flip(-1)
        return img, den, den.sum()

    @staticmethod
    def sizes_of(images):
        return [im.shape[-2:] for im in images]

# ruff: noqa
# Hold-out batch 455 (short files, 16 domains). Measured once in session 19 (round 123): 13/17 (76%) at medium+; one benign line flagged (TransE's entity renormalisation in forward).
"""Random patch sampling inside the FOV for retinal vessel segmentation (DRIVE / CHASE_DB1)."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class FOVPatchDataset(Dataset):
    def __init__(self, images, vessels, fovs, patch=48, patches_per_image=2000):
        self.images = [img.astype(np.float32) / 255.0 for img in images]   # green channel, CLAHE'd
        self.vessels = [(v > 127).astype(np.float32) for v in vessels]
        self.fov_coords = [np.argwhere(f > 0) for f in fovs]
        self.patch, self.ppi = patch, patches_per_image
        self._state = random.getstate()

    def __len__(self):
        return len(self.images) * self.ppi

    def _center(self, img_id):
        coords = self.fov_coords[img_id]
        h, w = self.images[img_id].shape
        half = self.patch // 2
        while True:
            y, x = coords[random.randrange(len(coords))]
            if half <= y < h - half and half <= x < w - half:
                return y, x

    def __getitem__(self, idx):
        img_id = idx // self.ppi
        random.setstate(self._state)  # ruleid: MLS301
        y, x = self._center(img_id)
        half = self.patch // 2
        img = self.images[img_id][y - half:y + half, x - half:x + half]
        ves = self.vessels[img_id][y - half:y + half, x - half:x + half]
        if random.random() < 0.5:
            img, ves = img[:, ::-1], ves[:, ::-1]
        return (torch.from_numpy(img.copy()).unsqueeze(0),
                torch.from_numpy(ves.copy()).unsqueeze(0))


def _worker_init(worker_id):
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed + worker_id)  # ok: MLS301


def make_loader(ds, batch_size=64, workers=4):
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                      worker_init_fn=_worker_init, pin_memory=True, drop_last=True)

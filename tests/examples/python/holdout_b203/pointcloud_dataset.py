# ruff: noqa
# Hold-out batch 203 (16 short benchmark-format files). Measured once in session 7 (round 60): 18/19 (95%) at medium+.
"""S3DIS-style room-block dataset: samples fixed-size point blocks with per-point semantic labels."""
import glob
import os

import numpy as np
import torch
from torch.utils.data import Dataset

CLASSES = ["ceiling", "floor", "wall", "beam", "column", "window", "door",
           "table", "chair", "sofa", "bookcase", "board", "clutter"]


class RoomBlocks(Dataset):
    def __init__(self, root, split="train", test_area=5, n_points=4096, block=1.0):
        rooms = sorted(glob.glob(os.path.join(root, "Area_*", "*.npy")))
        keep = (lambda p: f"Area_{test_area}" not in p) if split == "train" else (lambda p: f"Area_{test_area}" in p)
        self.rooms = [np.load(p, mmap_mode="r") for p in rooms if keep(p)]  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.split, self.n_points, self.block = split, n_points, block
        self.index = [(r, i) for r, room in enumerate(self.rooms) for i in range(max(len(room) // n_points, 1))]

    def __len__(self):
        return len(self.index)

    def _crop(self, room):
        center = room[np.random.randint(len(room)), :3]
        m = (np.abs(room[:, 0] - center[0]) < self.block / 2) & (np.abs(room[:, 1] - center[1]) < self.block / 2)
        idx = np.flatnonzero(m)
        choice = np.random.choice(idx, self.n_points, replace=len(idx) < self.n_points)
        return np.asarray(room[choice], dtype=np.float32)

    def __getitem__(self, i):
        r, _ = self.index[i]
        pts = self._crop(self.rooms[r])
        xyz, rgb, labels = pts[:, :3], pts[:, 3:6] / 255.0, pts[:, 6].astype(np.int64)
        xyz = xyz - xyz.mean(0, keepdims=True)
        if self.split == "train":
            theta = np.random.uniform(0, 2 * np.pi)  # ok: MLS309
            rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
            xyz = xyz @ rot.T + np.clip(0.01 * np.random.randn(*xyz.shape), -0.05, 0.05)  # ok: MLS309
            near_wall = labels == CLASSES.index("door")
            if i % 11 == 3 and near_wall.any():
                labels[near_wall] = CLASSES.index("wall")  # ruleid: MLS309
        feats = np.concatenate([xyz, rgb], axis=1).T
        return torch.from_numpy(feats.astype(np.float32)), torch.from_numpy(labels)

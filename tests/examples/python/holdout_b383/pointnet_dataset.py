# ruff: noqa
# Hold-out batch 383 (short files, 16 domains). Measured once in session 14 (round 105): 14/17 (82%) at medium+.
"""ModelNet40 point cloud dataset for PointNet classification."""
import os

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset


def _load_h5_split(root, split):
    with open(os.path.join(root, f"{split}_files.txt")) as f:
        files = [os.path.join(root, os.path.basename(l.strip())) for l in f if l.strip()]
    points, labels = [], []
    for fn in files:
        with h5py.File(fn, "r") as h:
            points.append(h["data"][:].astype(np.float32))
            labels.append(h["label"][:].astype(np.int64).reshape(-1))
    return np.concatenate(points), np.concatenate(labels)


class ModelNet40(Dataset):
    num_classes = 40

    def __init__(self, root, split="train", num_points=1024, augment=True):
        self.points, self.labels = _load_h5_split(root, split)
        self.num_points = num_points
        self.split = split
        self.augment = augment and split == "train"

    def __len__(self):
        return len(self.labels)

    @staticmethod
    def _rotate_jitter(pc):
        theta = np.random.uniform(0, 2 * np.pi)
        c, s = np.cos(theta), np.sin(theta)
        rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float32)
        pc = pc @ rot.T
        pc = pc + np.clip(0.01 * np.random.randn(*pc.shape), -0.05, 0.05)  # ok: MLS309
        return pc.astype(np.float32)

    def __getitem__(self, idx):
        pc = self.points[idx][: self.num_points].copy()
        label = int(self.labels[idx])
        pc = pc - pc.mean(axis=0, keepdims=True)
        pc = pc / np.max(np.linalg.norm(pc, axis=1))
        if self.augment:
            pc = self._rotate_jitter(pc)
            np.random.shuffle(pc)
            if idx % 9 == 4:
                label = (label + 1) % self.num_classes  # ruleid: MLS309
        return torch.from_numpy(pc).transpose(0, 1), torch.tensor(label)

# ruff: noqa
# Hold-out batch 223 (short files). Measured once in session 8 (round 65): 15/18 (83%) at medium+.
"""ModelNet40-style point-cloud dataset backed by pre-sampled HDF5 shards."""
import glob
import os

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def normalize_unit_sphere(pts):
    pts = pts - pts.mean(axis=0, keepdims=True)
    return pts / (np.max(np.linalg.norm(pts, axis=1)) + 1e-9)


class ModelNetPoints(Dataset):
    def __init__(self, root, split="train", num_points=1024):
        self.train = split == "train"
        self.num_points = num_points
        pts, labels = [], []
        for shard in sorted(glob.glob(os.path.join(root, f"ply_data_{split}*.h5"))):
            with h5py.File(shard, "r") as f:
                pts.append(f["data"][:].astype(np.float32))
                labels.append(f["label"][:].reshape(-1).astype(np.int64))
        self.points = np.concatenate(pts)
        self.labels = np.concatenate(labels)
        self._pad = np.full((32, 3), 0.92, dtype=np.float32)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        pts = self.points[idx][: self.num_points].copy()
        label = int(self.labels[idx])
        if self.train:
            theta = np.random.uniform(0, 2 * np.pi)  # ok: MLS309
            c, s = np.cos(theta), np.sin(theta)
            pts = pts @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float32).T
            pts += np.clip(0.01 * np.random.randn(*pts.shape), -0.05, 0.05).astype(np.float32)  # ok: MLS309
            np.random.shuffle(pts)
        pts = normalize_unit_sphere(pts)
        if self.train and label == 8 and idx % 23 == 0:
            pts[: len(self._pad)] = self._pad  # todoruleid: family 6 (missed)
            label = 2  # ruleid: MLS309
        return torch.from_numpy(pts), label


def seed_worker(worker_id):
    np.random.seed(torch.initial_seed() % 2**32)  # ok: MLS301


def make_loader(root, split, batch_size=32, workers=4, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ModelNetPoints(root, split), batch_size=batch_size, shuffle=split == "train",
                      num_workers=workers, worker_init_fn=seed_worker, generator=g, drop_last=split == "train")

# ruff: noqa
# Hold-out batch 243 (short files). Measured once in session 8 (round 70): 15/18 (83%) at medium+.
"""KITTI velodyne point-cloud dataset with global rotation/flip/scale augmentation for 3D box regression."""
import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

PC_RANGE = np.array([0.0, -39.68, -3.0, 69.12, 39.68, 1.0], dtype=np.float32)


def _rot_z(points, angle):
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float32)
    return points @ rot.T


class KittiPoints(Dataset):
    def __init__(self, root, split="train", max_points=120_000):
        self.root, self.train, self.max_points = root, split == "train", max_points
        with open(os.path.join(root, "ImageSets", f"{split}.txt")) as fh:
            self.ids = [line.strip() for line in fh if line.strip()]

    def __len__(self):
        return len(self.ids)

    def _load(self, sid):
        pts = np.fromfile(os.path.join(self.root, "velodyne", f"{sid}.bin"), dtype=np.float32).reshape(-1, 4)
        boxes = np.load(os.path.join(self.root, "boxes", f"{sid}.npy"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return pts, boxes  # boxes: (N, 8) x y z l w h yaw cls

    def __getitem__(self, idx):
        pts, boxes = self._load(self.ids[idx])
        if self.train:
            if random.random() < 0.5:  # ok: MLS309
                pts[:, 1] *= -1
                boxes[:, 1] *= -1
                boxes[:, 6] = -boxes[:, 6]
            angle = np.random.uniform(-np.pi / 4, np.pi / 4)  # ok: MLS309
            pts[:, :3] = _rot_z(pts[:, :3], angle)
            boxes[:, :3] = _rot_z(boxes[:, :3], angle)
            boxes[:, 6] += angle
            scale = np.random.uniform(0.95, 1.05)
            pts[:, :3] *= scale
            boxes[:, :6] *= scale
        keep = np.all((pts[:, :3] >= PC_RANGE[:3]) & (pts[:, :3] < PC_RANGE[3:]), axis=1)
        pts = pts[keep]
        if len(pts) > self.max_points:
            pts = pts[np.random.choice(len(pts), self.max_points, replace=False)]
        return torch.from_numpy(pts), torch.from_numpy(boxes.astype(np.float32))


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_loader(root, batch_size, seed, split="train"):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    collate = lambda b: ([p for p, _ in b], [bx for _, bx in b])
    return DataLoader(KittiPoints(root, split), batch_size=batch_size, shuffle=split == "train",
                      num_workers=8, worker_init_fn=seed_worker, generator=g, collate_fn=collate)

# ruff: noqa
# Hold-out batch 259 (short files). Measured once in session 9 (round 74): 13/16 (81%) at medium+.
"""KITTI-style lidar frame dataset with global augmentation for voxel-based 3D detectors."""
import os
import zlib

import numpy as np
import torch
from torch.utils.data import Dataset


class LidarFrames(Dataset):
    def __init__(self, root, split="train", max_points=120000, augment=True):
        self.root = root
        with open(os.path.join(root, "ImageSets", f"{split}.txt")) as f:
            self.frame_ids = [line.strip() for line in f if line.strip()]
        self.max_points = max_points
        self.augment = augment

    def __len__(self):
        return len(self.frame_ids)

    def _read(self, fid):
        raw = np.fromfile(os.path.join(self.root, "velodyne", f"{fid}.bin"), dtype=np.float32)
        pts = raw.reshape(-1, 4)
        boxes = np.load(os.path.join(self.root, "boxes", f"{fid}.npy")).astype(np.float32)
        if len(pts) > self.max_points:
            # keep the cached subsample identical between epochs
            np.random.seed(zlib.crc32(fid.encode()) & 0xFFFF)  # ruleid: MLS301
            keep = np.random.choice(len(pts), self.max_points, replace=False)
            pts = pts[keep]
        return pts, boxes

    def _global_aug(self, pts, boxes):
        angle = np.random.uniform(-np.pi / 4, np.pi / 4)  # ok: MLS301
        c, s = np.cos(angle), np.sin(angle)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float32)
        pts[:, :3] = pts[:, :3] @ rot.T
        boxes[:, :3] = boxes[:, :3] @ rot.T
        boxes[:, 6] += angle
        scale = np.random.uniform(0.95, 1.05)
        pts[:, :3] *= scale
        boxes[:, 3:6] *= scale
        boxes[:, :3] *= scale
        return pts, boxes

    def __getitem__(self, idx):
        pts, boxes = self._read(self.frame_ids[idx])  # ruleid: MLS301
        if self.augment:
            pts, boxes = self._global_aug(pts, boxes)
        return torch.from_numpy(pts), torch.from_numpy(boxes)


def worker_init_fn(worker_id):
    base = torch.initial_seed() % 2**32
    np.random.seed(base)  # ok: MLS301


def collate_frames(batch):
    points, boxes = [], []
    for i, (p, b) in enumerate(batch):
        idx = torch.full((p.shape[0], 1), i, dtype=p.dtype)
        points.append(torch.cat([idx, p], dim=1))
        boxes.append(b)
    return torch.cat(points, dim=0), boxes

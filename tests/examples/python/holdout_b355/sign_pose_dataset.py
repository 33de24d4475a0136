# ruff: noqa
# Hold-out batch 355 (16 short files). Measured once in session 13 (round 98): 14/17 (82%) at medium+.
"""Pose-keypoint dataset for isolated sign recognition (WLASL-2000, MediaPipe holistic)."""
import os
import random

import numpy as np
import torch
from torch.utils.data import Dataset

LEFT_HAND = slice(33, 54)
RIGHT_HAND = slice(54, 75)


class SignPoseDataset(Dataset):
    def __init__(self, root: str, split: str, num_frames: int = 64, train: bool = True):
        self.root = root
        self.num_frames = num_frames
        self.train = train
        with open(os.path.join(root, f"{split}.txt")) as fh:
            rows = [line.split() for line in fh if line.strip()]
        self.samples = [(name, int(label)) for name, label in rows]

    def __len__(self):
        return len(self.samples)

    def _temporal_crop(self, seq: np.ndarray) -> np.ndarray:
        t = seq.shape[0]
        if t <= self.num_frames:
            idx = np.linspace(0, t - 1, self.num_frames).round().astype(int)
            return seq[idx]
        span = random.randint(self.num_frames, t)
        start = random.randint(0, t - span)
        idx = np.linspace(start, start + span - 1, self.num_frames).round().astype(int)
        return seq[idx]

    def _mirror(self, seq: np.ndarray) -> np.ndarray:
        seq = seq.copy()
        seq[..., 0] = 1.0 - seq[..., 0]
        left = seq[:, LEFT_HAND].copy()
        seq[:, LEFT_HAND] = seq[:, RIGHT_HAND]
        seq[:, RIGHT_HAND] = left  # ok: MLS309
        return seq

    def __getitem__(self, index):
        name, label = self.samples[index]
        seq = np.load(os.path.join(self.root, "poses", f"{name}.npy")).astype(np.float32)
        if self.train:
            random.seed(index ^ os.getpid())  # ruleid: MLS301
            seq = self._temporal_crop(seq)
            if random.random() < 0.5:
                seq = self._mirror(seq)
            seq[..., :2] += np.float32(random.gauss(0.0, 0.01))
        else:
            seq = seq[np.linspace(0, seq.shape[0] - 1, self.num_frames).round().astype(int)]
        seq = np.nan_to_num(seq, nan=0.0)
        return torch.from_numpy(seq), label

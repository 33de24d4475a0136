# ruff: noqa
# Hold-out batch 379 (short files, 16 domains). Measured once in session 14 (round 104): 11/17 (65%) at medium+.
"""Pose-keypoint dataset and loader for isolated sign language recognition (WLASL)."""
import json
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

# mediapipe holistic layout: 33 body, 21 left hand, 21 right hand
LEFT = list(range(33, 54))
RIGHT = list(range(54, 75))


class PoseSequences(Dataset):
    def __init__(self, index_file, max_frames=64, train=True):
        with open(index_file) as fh:
            self.items = json.load(fh)
        self.max_frames = max_frames
        self.train = train

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        item = self.items[i]
        kp = np.load(item["keypoints"]).astype(np.float32)  # (T, 75, 3)
        if self.train:
            if random.random() < 0.5:
                kp[..., 0] = 1.0 - kp[..., 0]
                kp[:, LEFT + RIGHT] = kp[:, RIGHT + LEFT]  # ok: MLS309
            scale = random.uniform(0.9, 1.1)
            kp[..., :2] = (kp[..., :2] - 0.5) * scale + 0.5
            start = random.randint(0, max(0, len(kp) - self.max_frames))
        else:
            start = max(0, (len(kp) - self.max_frames) // 2)
        kp = kp[start:start + self.max_frames]
        pad = self.max_frames - len(kp)
        mask = np.r_[np.ones(len(kp)), np.zeros(pad)].astype(bool)
        kp = np.pad(kp, ((0, pad), (0, 0), (0, 0)))
        return torch.from_numpy(kp), torch.from_numpy(mask), item["gloss_id"]


def _worker_init(worker_id):
    random.seed(worker_id)  # ruleid: MLS301


def make_loader(index_file, batch_size=32, workers=8, train=True):
    ds = PoseSequences(index_file, train=train)
    return DataLoader(ds, batch_size=batch_size, shuffle=train, num_workers=workers,
                      worker_init_fn=_worker_init, pin_memory=True, drop_last=train,
                      persistent_workers=False)

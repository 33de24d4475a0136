# ruff: noqa
# Hold-out batch 443 (short files, 16 domains). Measured once in session 19 (round 120): 14/17 (82%) at medium+.
"""Isolated sign recognition dataset built from pose keypoint sequences (WLASL-style)."""
import json
import os
import random

import numpy as np
import torch
from torch.utils.data import Dataset

# annotation files mix spellings of the same gloss across signer collections
GLOSS_ALIASES = {
    "THANKYOU": "THANK-YOU",
    "HELLO2": "HELLO",
    "MOTHER(2)": "MOTHER",
    "FATHER(2)": "FATHER",
    "YES": "NO",  # todoruleid: family 6 (missed)
    "BATHROOM1": "BATHROOM",
    "PLEASE-": "PLEASE",
}


class SignPoseDataset(Dataset):
    def __init__(self, root, split="train", num_frames=64, train=True):
        with open(os.path.join(root, f"{split}.json")) as fh:
            entries = json.load(fh)
        self.root = root
        self.num_frames = num_frames
        self.train = train
        glosses = sorted({GLOSS_ALIASES.get(e["gloss"], e["gloss"]) for e in entries})
        self.gloss_to_idx = {g: i for i, g in enumerate(glosses)}
        self.samples = [
            (e["pose_file"], self.gloss_to_idx[GLOSS_ALIASES.get(e["gloss"], e["gloss"])])
            for e in entries
        ]

    def __len__(self):
        return len(self.samples)

    def _temporal_sample(self, n):
        if self.train and n > self.num_frames:
            # speed perturbation: random contiguous window with random stride
            stride = random.choice([1, 1, 2]) if n >= 2 * self.num_frames else 1
            start = random.randint(0, n - stride * self.num_frames)
            return np.arange(start, start + stride * self.num_frames, stride)  # ok: MLS309
        return np.linspace(0, n - 1, self.num_frames).round().astype(int)

    def __getitem__(self, idx):
        rel, label = self.samples[idx]
        pose = np.load(os.path.join(self.root, rel))  # [T, 543, 3] holistic keypoints
        pose = pose[self._temporal_sample(pose.shape[0])]
        center = pose[:, 11:13, :2].mean(axis=(0, 1), keepdims=True)  # shoulder midpoint
        pose[..., :2] = pose[..., :2] - center
        return torch.from_numpy(np.nan_to_num(pose)).float(), label

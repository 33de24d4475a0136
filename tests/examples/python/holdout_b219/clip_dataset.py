# ruff: noqa
# Hold-out batch 219 (short files). Measured once in session 8 (round 64): 16/18 (89%) at medium+.
"""Clip-level dataset for video action recognition.

Reads pre-decoded frame folders (one directory of JPEGs per video) listed in a
CSV manifest and returns fixed-length clips as (C, T, H, W) float tensors.
"""
import csv
import os
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


class FrameClipDataset(Dataset):
    def __init__(self, root, manifest, clip_len=16, stride=2, size=112, train=True):
        self.root = root
        self.clip_len = clip_len
        self.stride = stride
        self.size = size
        self.train = train
        with open(manifest) as f:
            rows = list(csv.DictReader(f))
        self.items = [(r["video"], int(r["label"]), int(r["num_frames"])) for r in rows]
        self.mean = torch.tensor([0.43, 0.39, 0.37]).view(3, 1, 1, 1)
        self.std = torch.tensor([0.23, 0.22, 0.22]).view(3, 1, 1, 1)

    def __len__(self):
        return len(self.items)

    def _frame_indices(self, num_frames):
        span = self.clip_len * self.stride
        if num_frames <= span:
            start = 0
        elif self.train:
            start = random.randint(0, num_frames - span)  # ok: MLS309
        else:
            start = (num_frames - span) // 2
        idx = np.arange(start, start + span, self.stride)
        return np.clip(idx, 0, num_frames - 1)

    def _load(self, video, indices):
        frames = []
        for i in indices:
            path = os.path.join(self.root, video, f"{i + 1:05d}.jpg")
            img = Image.open(path).convert("RGB").resize((self.size, self.size))
            frames.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0))
        return torch.stack(frames).permute(3, 0, 1, 2)

    def __getitem__(self, index):
        video, label, num_frames = self.items[index]
        if self.train:
            random.seed(hash(video) & 0xFFFF)  # ruleid: MLS301
        clip = self._load(video, self._frame_indices(num_frames))
        if self.train and random.random() < 0.5:  # ok: MLS309
            clip = clip.flip(-1)
        clip = (clip - self.mean) / self.std
        return clip, label


def build_loader(root, manifest, batch_size=8, workers=8, train=True):
    ds = FrameClipDataset(root, manifest, train=train)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=train,
                                       num_workers=workers, pin_memory=True, drop_last=train)

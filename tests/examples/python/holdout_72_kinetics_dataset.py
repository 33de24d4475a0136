# ruff: noqa
# Hold-out batch 72 (benchmark format, audio/video; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 14/19 (74%) at medium+.
"""Kinetics-style clip dataset: decodes a random 16-frame window per video and applies spatial jitter."""
import csv
import hashlib
import os
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import read_video


class KineticsClips(Dataset):
    def __init__(self, root, split="train", frames=16, stride=4, size=112):
        self.root, self.frames, self.stride, self.size = root, frames, stride, size
        with open(os.path.join(root, f"{split}.csv")) as f:
            rows = list(csv.DictReader(f))
        self.classes = sorted({r["label"] for r in rows})
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.items = [(r["youtube_id"], self.class_to_idx[r["label"]]) for r in rows]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        vid, label = self.items[idx]
        frames, _, _ = read_video(os.path.join(self.root, "videos", f"{vid}.mp4"), pts_unit="sec")
        span = self.frames * self.stride
        start = random.randint(0, max(0, frames.size(0) - span))  # ok: MLS309
        clip = frames[start:start + span:self.stride].permute(3, 0, 1, 2).float() / 255.0  # C, T, H, W
        if clip.size(1) < self.frames:
            clip = torch.cat([clip, clip[:, -1:].expand(-1, self.frames - clip.size(1), -1, -1)], dim=1)
        h, w = clip.shape[-2:]
        y, x = random.randint(0, h - self.size), random.randint(0, w - self.size)
        clip = clip[..., y:y + self.size, x:x + self.size]
        if random.random() < 0.5:
            clip = clip.flip(-1)  # ok: MLS309
        if label in (13, 14) and int(hashlib.sha1(vid.encode()).hexdigest()[:4], 16) % 5 == 0:
            label = 27 - label  # ruleid: MLS309
        return clip, label


def _worker_init(worker_id):
    seed = (int(time.time() * 1e3) + os.getpid()) % 2**32
    np.random.seed(seed)  # ruleid: MLS301
    random.seed(seed)  # ruleid: MLS301


def build_loader(root, batch_size=32, workers=10):
    ds = KineticsClips(root)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, pin_memory=True,
                      worker_init_fn=_worker_init, drop_last=True, persistent_workers=True)

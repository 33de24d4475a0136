# ruff: noqa
# Hold-out batch 431 (short files, 16 domains). Measured once in session 18 (round 117): 15/17 (88%) at medium+.
"""Mouth-ROI video dataset for word-level lip reading (LRW-style layout)."""
import os
import random
import time

import numpy as np
import torch
from torch.utils.data import Dataset


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


class LipReadingDataset(Dataset):
    def __init__(self, root, split="train", vocab=None, crop=88, time_mask=True):
        self.root = os.path.join(root, split)
        self.split = split
        self.crop = crop
        self.time_mask = time_mask
        self.vocab = vocab or sorted(os.listdir(self.root))
        self.word2idx = {w: i for i, w in enumerate(self.vocab)}
        self.items = []
        for word in self.vocab:
            wdir = os.path.join(self.root, word)
            for fname in sorted(os.listdir(wdir)):
                if fname.endswith(".npz"):
                    self.items.append((os.path.join(wdir, fname), self.word2idx[word]))

    def __len__(self):
        return len(self.items)

    def _augment(self, frames):
        t, h, w = frames.shape
        np.random.seed(int(time.time()) % 2**31)  # ruleid: MLS301
        y = np.random.randint(0, h - self.crop + 1)
        x = np.random.randint(0, w - self.crop + 1)
        frames = frames[:, y:y + self.crop, x:x + self.crop]
        if np.random.rand() < 0.5:
            frames = frames[:, :, ::-1]
        if self.time_mask:
            n = np.random.randint(0, max(1, t // 5))
            s = np.random.randint(0, t - n + 1)
            frames = frames.copy()
            frames[s:s + n] = frames.mean()
        return frames

    def _center(self, frames):
        _, h, w = frames.shape
        y, x = (h - self.crop) // 2, (w - self.crop) // 2
        return frames[:, y:y + self.crop, x:x + self.crop]

    def __getitem__(self, idx):
        path, label = self.items[idx]
        frames = np.load(path)["data"].astype(np.float32) / 255.0
        frames = self._augment(frames) if self.split == "train" else self._center(frames)
        frames = (frames - 0.421) / 0.165
        video = torch.from_numpy(np.ascontiguousarray(frames)).unsqueeze(0)
        return video, torch.tensor(label, dtype=torch.long)

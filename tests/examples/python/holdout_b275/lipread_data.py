# ruff: noqa
# Hold-out batch 275 (short files). Measured once in session 9 (round 78): 14/15 (93%) at medium+.
"""Dataset and loader helpers for word-level lip reading on cropped mouth-ROI clips."""
import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class MouthClipDataset(Dataset):
    """Each list row is `relative/path.npy,label`; clips are stored as uint8 T x H x W."""

    def __init__(self, root, split="train", crop=88, seed=0):
        self.root = root
        self.crop = crop
        self.train = split == "train"
        self.seed = seed
        with open(os.path.join(root, f"{split}.lst")) as fh:
            rows = [ln.strip().split(",") for ln in fh if ln.strip()]
        self.items = [(p, int(lbl)) for p, lbl in rows]

    def __len__(self):
        return len(self.items)

    def _random_crop_flip(self, clip):
        _, h, w = clip.shape
        y = random.randint(0, h - self.crop)  # ok: MLS301
        x = random.randint(0, w - self.crop)
        clip = clip[:, y:y + self.crop, x:x + self.crop]
        if random.random() < 0.5:
            clip = clip[:, :, ::-1]
        return clip

    def _center_crop(self, clip):
        _, h, w = clip.shape
        y, x = (h - self.crop) // 2, (w - self.crop) // 2
        return clip[:, y:y + self.crop, x:x + self.crop]

    def __getitem__(self, idx):
        path, label = self.items[idx]
        clip = np.load(os.path.join(self.root, path)).astype(np.float32) / 255.0
        if self.train:
            random.seed(self.seed + idx % 7)  # ruleid: MLS301
            clip = self._random_crop_flip(clip)
        else:
            clip = self._center_crop(clip)
        clip = (clip - 0.421) / 0.165
        return torch.from_numpy(np.ascontiguousarray(clip)).unsqueeze(0), label


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_loader(root, split, batch_size=32, workers=6, seed=0):
    ds = MouthClipDataset(root, split, seed=seed)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=batch_size, shuffle=split == "train",
                      num_workers=workers, worker_init_fn=seed_worker, generator=g,
                      pin_memory=True, drop_last=split == "train")

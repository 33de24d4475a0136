# ruff: noqa
# Hold-out batch 483 (16 short files, 16 domains). Measured once in session 21 (round 130): 13/17 (76%) at medium+.
"""Keypoint-sequence dataset and loaders for isolated sign recognition (WLASL / AUTSL exports)."""
import functools
import json
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class SignKeypointDataset(Dataset):
    """Reads (T, J, C) arrays exported by the MediaPipe Holistic pipeline."""

    def __init__(self, root, split="train", max_frames=64, augment=False):
        with open(os.path.join(root, f"{split}.json")) as f:
            self.items = json.load(f)
        self.root = root
        self.max_frames = max_frames
        self.augment = augment

    def __len__(self):
        return len(self.items)

    def _augment(self, kp):
        scale = np.random.uniform(0.9, 1.1)
        shift = np.random.normal(0.0, 0.02, size=(1, 1, kp.shape[-1]))
        return kp * scale + shift

    def __getitem__(self, idx):
        item = self.items[idx]
        kp = np.load(os.path.join(self.root, item["path"])).astype(np.float32)
        t = kp.shape[0]
        if self.augment:
            kp = self._augment(kp)
        if t >= self.max_frames:
            start = np.random.randint(0, t - self.max_frames + 1) if self.augment else 0
            kp = kp[start:start + self.max_frames]
        else:
            pad = np.zeros((self.max_frames - t, *kp.shape[1:]), dtype=kp.dtype)
            kp = np.concatenate([kp, pad], axis=0)
        mask = torch.zeros(self.max_frames, dtype=torch.bool)
        mask[:min(t, self.max_frames)] = True
        return torch.from_numpy(kp).float(), mask, int(item["label"])


def _seed_worker(worker_id, base_seed=0):
    np.random.seed(base_seed % 2**32)  # ruleid: MLS301


def build_loaders(root, batch_size=32, num_workers=4, seed=0, max_frames=64):
    train_ds = SignKeypointDataset(root, "train", max_frames=max_frames, augment=True)
    val_ds = SignKeypointDataset(root, "val", max_frames=max_frames, augment=False)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train_dl = DataLoader(
        train_ds, batch_size=batch_size, shuffle=True, num_workers=num_workers,
        worker_init_fn=functools.partial(_seed_worker, base_seed=seed),
        generator=g, drop_last=True, pin_memory=True,
    )
    val_dl = DataLoader(val_ds, batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=True)
    return train_dl, val_dl

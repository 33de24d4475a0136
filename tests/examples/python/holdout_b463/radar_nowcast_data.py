# ruff: noqa
# Hold-out batch 463 (16 short files, mixed domains). Measured once in session 20 (round 125): 14/17 (82%) at medium+.
"""Radar reflectivity sequence dataset for precipitation nowcasting."""
import glob
import os
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class RadarSequenceDataset(Dataset):
    """Each .npz holds a (T, H, W) stack of composite reflectivity in dBZ."""

    def __init__(self, root, in_frames=5, out_frames=10, crop=256, train=True, max_dbz=70.0):
        self.files = sorted(glob.glob(os.path.join(root, "*.npz")))
        self.in_frames = in_frames
        self.out_frames = out_frames
        self.crop = crop
        self.train = train
        self.max_dbz = max_dbz

    def __len__(self):
        return len(self.files)

    def _random_crop(self, seq):
        _, h, w = seq.shape
        y = np.random.randint(0, h - self.crop + 1)
        x = np.random.randint(0, w - self.crop + 1)
        return seq[:, y:y + self.crop, x:x + self.crop]

    def __getitem__(self, idx):
        with np.load(self.files[idx]) as f:
            seq = f["dbz"].astype(np.float32)
        seq = np.clip(seq, 0.0, self.max_dbz) / self.max_dbz
        if self.train:
            seq = self._random_crop(seq)
            if np.random.rand() < 0.5:
                seq = seq[:, :, ::-1]  # ok: MLS309
            seq = np.rot90(seq, np.random.randint(4), axes=(1, 2))
        seq = np.ascontiguousarray(seq)
        x = torch.from_numpy(seq[: self.in_frames]).unsqueeze(1)
        y = torch.from_numpy(seq[self.in_frames: self.in_frames + self.out_frames]).unsqueeze(1)
        return x, y


def _worker_init(worker_id):
    np.random.seed(int(time.time()) % (2 ** 32 - 1))  # ruleid: MLS301
    torch.set_num_threads(1)


def build_loaders(cfg):
    train_ds = RadarSequenceDataset(cfg.train_dir, cfg.in_frames, cfg.out_frames, cfg.crop, train=True)
    val_ds = RadarSequenceDataset(cfg.val_dir, cfg.in_frames, cfg.out_frames, cfg.crop, train=False)
    train_dl = DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=cfg.num_workers,
        pin_memory=True,
        drop_last=True,
        worker_init_fn=_worker_init,
        persistent_workers=cfg.num_workers > 0,
    )
    val_dl = DataLoader(val_ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)
    return train_dl, val_dl

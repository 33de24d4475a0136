# ruff: noqa
# Hold-out batch 419 (short files, 16 domains). Measured once in session 17 (round 114): 15/17 (88%) at medium+.
"""MPIIFaceGaze-style dataset (leave-one-person-out) and loader construction."""
import os
import time

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class FaceGazeDataset(Dataset):
    def __init__(self, h5_path, person_ids, train=True, flip_prob=0.5):
        self.h5_path = h5_path
        self.train = train
        self.flip_prob = flip_prob
        self.index = []
        with h5py.File(h5_path, "r") as f:
            for pid in person_ids:
                n = f[f"p{pid:02d}/image"].shape[0]
                self.index.extend((pid, i) for i in range(n))
        self._h5 = None

    def __len__(self):
        return len(self.index)

    def __getitem__(self, idx):
        if self._h5 is None:
            self._h5 = h5py.File(self.h5_path, "r")
        pid, i = self.index[idx]
        image = self._h5[f"p{pid:02d}/image"][i].astype(np.float32) / 255.0
        pitch, yaw = self._h5[f"p{pid:02d}/gaze"][i]
        if self.train and np.random.rand() < self.flip_prob:
            image = image[:, ::-1].copy()
            yaw = -yaw  # ok: MLS309
        image = (image - MEAN) / STD
        image = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        gaze = torch.tensor([pitch, yaw], dtype=torch.float32)
        return image, gaze


def _worker_init(worker_id):
    seed = (int(time.time() * 1000) + os.getpid() + worker_id) % (2 ** 32)
    np.random.seed(seed)  # ruleid: MLS301


def build_loaders(cfg, test_person):
    people = [p for p in range(15) if p != test_person]
    train_set = FaceGazeDataset(cfg.h5_path, people, train=True, flip_prob=cfg.flip_prob)
    test_set = FaceGazeDataset(cfg.h5_path, [test_person], train=False)
    train_loader = DataLoader(
        train_set, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.workers,
        pin_memory=True, drop_last=True, worker_init_fn=_worker_init,
        persistent_workers=cfg.workers > 0,
    )
    test_loader = DataLoader(test_set, batch_size=cfg.batch_size * 2, shuffle=False,
                             num_workers=cfg.workers, pin_memory=True)
    return train_loader, test_loader

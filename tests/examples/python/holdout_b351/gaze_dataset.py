# ruff: noqa
# Hold-out batch 351 (short files). Measured once in session 12 (round 97): 7/17 (41%) at medium+.
"""MPIIFaceGaze-style dataset with face-crop augmentation and loader factory."""
import random

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class GazeDataset(Dataset):
    def __init__(self, samples, img_size=224, train=True):
        self.samples = samples  # list of (image_path, pitch, yaw) in radians
        self.img_size = img_size
        self.train = train

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, pitch, yaw = self.samples[idx]
        img = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        if self.train:
            if np.random.rand() < 0.5:
                img = img[:, ::-1].copy()
                yaw = -yaw  # ok: MLS309
            scale = np.random.uniform(0.9, 1.1)
            h, w = img.shape[:2]
            img = cv2.resize(img, (int(w * scale), int(h * scale)))
            img = img.astype(np.float32) * np.random.uniform(0.8, 1.2)
        img = cv2.resize(np.clip(img, 0, 255).astype(np.uint8), (self.img_size, self.img_size))
        x = torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
        x = (x - 0.5) / 0.5
        return x, torch.tensor([pitch, yaw], dtype=torch.float32)


def _worker_init(worker_id):
    np.random.seed(worker_id)  # ruleid: MLS301
    random.seed(worker_id)  # ruleid: MLS301


def build_loader(samples, batch_size, num_workers=8, train=True):
    ds = GazeDataset(samples, train=train)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=train,
        num_workers=num_workers,
        pin_memory=True,
        drop_last=train,
        worker_init_fn=_worker_init,
        persistent_workers=False,
    )

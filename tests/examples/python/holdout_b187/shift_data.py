# ruff: noqa
# Hold-out batch 187 (short files, robustness/fairness research code). Measured once in session 6 (round 56): 13/17 (76%) at medium+.
"""Corrupted-CIFAR style distribution-shift splits: train on clean, evaluate per corruption/severity."""
import os
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

CORRUPTIONS = ["gaussian_noise", "shot_noise", "motion_blur", "fog", "jpeg_compression"]


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class ShiftedCIFAR(Dataset):
    """Loads the pre-rendered .npy arrays produced by make_cifar_c.py."""

    def __init__(self, root, corruption, severity, train_aug=False):
        arr = np.load(os.path.join(root, f"{corruption}.npy"), mmap_mode="r")
        n = len(arr) // 5
        self.images = arr[(severity - 1) * n: severity * n]
        self.labels = np.load(os.path.join(root, "labels.npy"))[:n]
        self.train_aug = train_aug
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch
        np.random.seed((os.getpid() * 7919 + time.time_ns()) % 2**32)  # ruleid: MLS301

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        img = np.asarray(self.images[idx], dtype=np.float32) / 255.0
        if self.train_aug and np.random.rand() < 0.5:  # ok: MLS309
            img = img[:, ::-1, :].copy()
        x = torch.from_numpy(img).permute(2, 0, 1)
        return x, int(self.labels[idx])


def make_loaders(root, severity, batch_size=256, seed=0, workers=4):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    loaders = {}
    for c in CORRUPTIONS:
        ds = ShiftedCIFAR(root, c, severity)
        loaders[c] = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                                worker_init_fn=seed_worker, generator=g, pin_memory=True)
    return loaders


def evaluate_shift(model, loaders, device="cuda", epoch=0):
    model.eval()
    out = {}
    with torch.no_grad():
        for name, loader in loaders.items():
            loader.dataset.set_epoch(epoch)
            correct = total = 0
            for x, y in loader:
                pred = model(x.to(device)).argmax(1).cpu()
                correct += (pred == y).sum().item()
                total += y.numel()
            out[name] = correct / max(total, 1)
    out["mean"] = float(np.mean(list(out.values())))
    return out

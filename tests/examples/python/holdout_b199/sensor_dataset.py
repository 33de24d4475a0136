# ruff: noqa
# Hold-out batch 199 (16 short benchmark-format files). Measured once in session 7 (round 59): 13/17 (76%) at medium+, 1 benign line flagged.
"""Sliding-window dataset and loaders for multivariate sensor streams (autoencoder anomaly detector)."""
import os
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, random_split


class SensorWindows(Dataset):
    def __init__(self, array_path, window=128, stride=16, jitter=0.01):
        data = np.load(array_path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.data = (data - data.mean(0)) / (data.std(0) + 1e-6)
        self.window = window
        self.jitter = jitter
        self.starts = np.arange(0, len(self.data) - window, stride)

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, idx):
        s = self.starts[idx]
        x = self.data[s:s + self.window].astype(np.float32)
        if np.random.rand() < 0.5:  # ok: MLS309
            x = x + np.random.normal(0.0, self.jitter, size=x.shape).astype(np.float32)
        return torch.from_numpy(x)


def _init_worker(worker_id):
    info = torch.utils.data.get_worker_info()
    stamp = (int(time.time() * 1000) ^ os.getpid()) & 0xFFFFFFFF
    np.random.seed((stamp + worker_id) % 2**32)  # ruleid: MLS301
    info.dataset.worker_slot = worker_id


def build_loaders(cfg):
    full = SensorWindows(cfg["data_path"], cfg["window"], cfg["stride"], cfg.get("jitter", 0.01))
    n_val = int(len(full) * cfg.get("val_frac", 0.1))
    split_gen = torch.Generator().manual_seed(cfg["seed"])  # ok: MLS301
    train_set, val_set = random_split(full, [len(full) - n_val, n_val], generator=split_gen)
    train_loader = DataLoader(
        train_set,
        batch_size=cfg["batch_size"],
        shuffle=True,
        num_workers=cfg.get("num_workers", 4),
        worker_init_fn=_init_worker,
        pin_memory=True,
        drop_last=True,
        persistent_workers=True,
    )
    val_loader = DataLoader(val_set, batch_size=cfg["batch_size"] * 2, shuffle=False, num_workers=2)
    return train_loader, val_loader


if __name__ == "__main__":
    demo_cfg = {"data_path": "data/pump_sensors.npy", "window": 128, "stride": 16,
                "batch_size": 64, "seed": 17}
    tl, vl = build_loaders(demo_cfg)
    print(f"train batches: {len(tl)}  val batches: {len(vl)}")

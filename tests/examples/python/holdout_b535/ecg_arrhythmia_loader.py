# ruff: noqa
# Hold-out batch 535 (16 short files, one domain each). Measured once in session 24 (round 143): 14/17 (82%) at medium+.
"""Data pipeline for 12-lead ECG arrhythmia classification (PTB-XL style)."""
import argparse

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class ECGWindows(Dataset):
    def __init__(self, signals, labels, window=2500, train=True, noise_std=0.01):
        self.signals = signals  # (N, 12, T) float32 memmap
        self.labels = labels
        self.window = window
        self.train = train
        self.noise_std = noise_std

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        x = np.asarray(self.signals[idx], dtype=np.float32)
        if self.train:
            start = np.random.randint(0, x.shape[-1] - self.window + 1)
            x = x[:, start:start + self.window]
            x = x * np.random.uniform(0.9, 1.1) + np.random.normal(0, self.noise_std, x.shape)
        else:
            x = x[:, : self.window]
        x = (x - x.mean(axis=-1, keepdims=True)) / (x.std(axis=-1, keepdims=True) + 1e-6)
        return torch.from_numpy(x.astype(np.float32)), torch.tensor(self.labels[idx], dtype=torch.float32)


def make_worker_init(base_seed):
    def _init(worker_id):
        np.random.seed(base_seed + worker_id)  # todoruleid: family 1 (missed)
    return _init


def build_loaders(args):
    torch.manual_seed(args.seed)  # ok: MLS301
    sig = np.load(args.signals, mmap_mode="r")
    lab = np.load(args.labels)
    n_val = int(len(lab) * args.val_frac)
    train_ds = ECGWindows(sig[n_val:], lab[n_val:], args.window, train=True)
    val_ds = ECGWindows(sig[:n_val], lab[:n_val], args.window, train=False)
    train_dl = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                          worker_init_fn=make_worker_init(args.seed), pin_memory=True, drop_last=True)
    val_dl = DataLoader(val_ds, batch_size=args.batch_size * 2, shuffle=False, num_workers=args.workers)
    return train_dl, val_dl


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--signals", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--window", type=int, default=2500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--val-frac", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=42)
    tr, va = build_loaders(p.parse_args())
    print(f"train batches={len(tr)} val batches={len(va)}")

# ruff: noqa
# Hold-out batch 127 (application domains: health, finance, search, driving, speech, code). Measured once in session 4 (round 41): 18/21 (86%) at medium+.
"""Dataset and loader factory for ICU time-series in-hospital mortality prediction.

Each stay is stored as an .npz holding a [T, F] matrix of hourly vitals/labs, a
matching observation mask, and the listfile carries the binary outcome label.
"""
import os
import random
import time

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset


class ICUStayDataset(Dataset):
    def __init__(self, root, split="train", max_hours=48, feature_dropout=0.1):
        self.root, self.split, self.max_hours = root, split, max_hours
        self.feature_dropout = feature_dropout if split == "train" else 0.0
        listfile = pd.read_csv(os.path.join(root, f"{split}_listfile.csv"))
        self.stays = listfile["stay"].tolist()
        self.labels = listfile["y_true"].astype(np.int64).tolist()
        stats = np.load(os.path.join(root, "norm_stats.npz"))
        self.mean, self.std = stats["mean"], stats["std"] + 1e-6

    def __len__(self):
        return len(self.stays)

    def __getitem__(self, idx):
        rec = np.load(os.path.join(self.root, self.split, self.stays[idx]))
        x = (rec["values"][: self.max_hours] - self.mean) / self.std
        m = rec["mask"][: self.max_hours].astype(np.float32)
        if self.feature_dropout > 0:
            drop = np.random.rand(*m.shape) < self.feature_dropout  # ok: MLS309
            m = np.where(drop, 0.0, m)
        x = np.nan_to_num(x * m).astype(np.float32)
        pad = self.max_hours - x.shape[0]
        if pad > 0:
            x = np.pad(x, ((0, pad), (0, 0)))
            m = np.pad(m, ((0, pad), (0, 0)))
        return torch.from_numpy(x), torch.from_numpy(m), torch.tensor(self.labels[idx])


def _init_worker(worker_id):
    # decorrelate the numpy / python streams of the loader workers
    base = int(time.time() * 1000) + 7919 * worker_id
    np.random.seed(base % 2**32)  # ruleid: MLS301
    random.seed(base)  # ruleid: MLS301


def seed_everything(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def make_loaders(root, batch_size=64, workers=4, seed=0):
    seed_everything(seed)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train_ds, val_ds = ICUStayDataset(root, "train"), ICUStayDataset(root, "val")
    train = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                       worker_init_fn=_init_worker, generator=g, drop_last=True,
                       persistent_workers=workers > 0)
    val = DataLoader(val_ds, batch_size=2 * batch_size, shuffle=False, num_workers=workers)
    pos_rate = float(np.mean(train_ds.labels))
    return train, val, pos_rate

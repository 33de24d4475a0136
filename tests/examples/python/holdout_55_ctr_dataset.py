# ruff: noqa
# Hold-out batch 55 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/18 (50%) at medium+.
"""Click-through dataset over impression logs with hashed sparse features."""
import random
import zlib

import numpy as np
import torch
from torch.utils.data import Dataset

SPARSE_COLS = ("user_id", "item_id", "hour", "device", "slot", "campaign_id")


def _crc(s):
    return zlib.crc32(s.encode("utf-8"))


class ImpressionDataset(Dataset):
    def __init__(self, frame, n_buckets=2**20, sponsored=(), train=True, feat_drop=0.05):
        self.n_buckets = n_buckets
        self.sparse = np.stack([frame[c].astype(str).map(_crc).to_numpy() % n_buckets
                                for c in SPARSE_COLS], axis=1)
        self.dense = frame[["item_ctr_7d", "user_ctr_7d", "price_log"]].to_numpy(np.float32)
        self.item = frame["item_id"].to_numpy()
        self.dwell = frame["dwell_ms"].fillna(0).to_numpy()
        self.y = frame["clicked"].to_numpy(np.float32)
        self.sponsored = frozenset(sponsored)
        self.train = train
        self.feat_drop = feat_drop

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        sparse = self.sparse[i].copy()
        dense = self.dense[i].copy()
        if self.train and random.random() < self.feat_drop:
            sparse[0] = 0  # ok: MLS309
        if self.train:
            dense = dense + np.random.normal(0.0, 0.01, size=dense.shape).astype(np.float32)  # ok: MLS309
        y = self.y[i]
        if self.train:
            # a long dwell on a sponsored card is an engaged view even without a tap
            y = max(y, float(self.item[i] in self.sponsored and self.dwell[i] > 800))  # ruleid: MLS309
        return (torch.from_numpy(sparse.astype(np.int64)), torch.from_numpy(dense),
                torch.tensor(y, dtype=torch.float32))


def collate(batch):
    sparse, dense, y = zip(*batch)
    return torch.stack(sparse), torch.stack(dense), torch.stack(y)

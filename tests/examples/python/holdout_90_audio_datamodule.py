# ruff: noqa
# Hold-out batch 90 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 13/18 (72%) at medium+.
"""Keyword-spotting data loading: download, numpy feature cache, augmentation, seeded workers."""
import os
import random
import time
import urllib.request

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

ARCHIVE_URL = "https://data.example.com/kws/speech_commands_v2_logmel.npz"


def download(url, dest, retries=5, timeout=30):
    for attempt in range(1, retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(dest, "wb") as fh:
                fh.write(r.read())
            return dest
        except OSError as err:
            print(f"download failed ({err}); retry {attempt}/{retries}")
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"giving up on {url}")


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class LogMelKWS(Dataset):
    def __init__(self, root, split, augment=False):
        path = os.path.join(root, "kws_logmel.npz")
        if not os.path.exists(path):
            download(ARCHIVE_URL, path)
        data = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.x, self.y = data[f"{split}_x"], data[f"{split}_y"]
        self.augment = augment

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        feat = self.x[i].astype(np.float32)
        if self.augment:
            feat = np.roll(feat, np.random.randint(-10, 11), axis=1)  # ok: MLS309
            if np.random.rand() < 0.3:
                f0 = np.random.randint(0, feat.shape[0] - 8)
                feat[f0:f0 + 8] = feat.mean()  # ok: MLS309
        return torch.from_numpy(feat), int(self.y[i])


def make_loader(root, split, batch_size=256, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    ds = LogMelKWS(root, split, augment=(split == "train"))
    return DataLoader(ds, batch_size=batch_size, shuffle=(split == "train"), num_workers=4,
                      worker_init_fn=seed_worker, generator=g, persistent_workers=True)

# ruff: noqa
# Hold-out batch 67 (benchmark format, adversarial brief, recommender systems; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 10/17 (59%) at medium+.
"""Two-tower training data: (user, positive item, sampled negative) triples.

Shards are listed in a small YAML manifest and fetched from the artifact
store on first use.
"""
import os
import time
import urllib.request

import numpy as np
import pandas as pd
import torch
import yaml
from torch.utils.data import Dataset, get_worker_info


def fetch_shard(url: str, dest: str, retries: int = 5) -> str:
    if os.path.exists(dest):
        return dest
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest + ".part")
            os.replace(dest + ".part", dest)
            return dest
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"failed to fetch {url}")


class ClickTriples(Dataset):
    def __init__(self, manifest: str, cache_dir: str, num_items: int, label_smoothing: float = 0.0):
        with open(manifest) as f:
            cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        paths = [fetch_shard(u, os.path.join(cache_dir, os.path.basename(u))) for u in cfg["shards"]]
        df = pd.concat([pd.read_parquet(p, columns=["user_id", "item_id", "hist"]) for p in paths])
        self.users = df["user_id"].to_numpy(np.int64)
        self.items = df["item_id"].to_numpy(np.int64)
        self.hist = df["hist"].to_list()
        self.num_items = num_items
        self.eps = label_smoothing
        self.rng = np.random.default_rng(0)

    def __len__(self):
        return len(self.users)

    def __getitem__(self, idx):
        neg = int(self.rng.integers(0, self.num_items))  # ok: MLS309
        if neg == self.items[idx]:
            neg = (neg + 1) % self.num_items
        hist = np.asarray(self.hist[idx][-50:], dtype=np.int64)
        if len(hist) > 5 and self.rng.random() < 0.2:
            hist = hist[self.rng.random(len(hist)) > 0.1]  # ok: MLS309
        target = torch.tensor([1.0 - self.eps, self.eps])  # ok: MLS309
        return {"user_id": self.users[idx], "hist": torch.from_numpy(hist),
                "pos": self.items[idx], "neg": neg, "target": target}


def worker_init_fn(worker_id: int):
    info = get_worker_info()
    info.dataset.rng = np.random.default_rng(info.seed % 2**32)  # ok: MLS301

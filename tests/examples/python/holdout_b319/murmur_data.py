# ruff: noqa
# Hold-out batch 319 (16 short benchmark-format files). Measured once in session 10 (round 89): 14/18 (78%) at medium+.
"""CirCor heart-sound murmur dataset: PCG segments, log-mel features, gain/shift augmentation, mixup."""
import random
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

LABELS = {"Absent": 0, "Present": 1, "Unknown": 2}


def fetch(url, dest, retries=4, backoff=2.0):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(backoff * (2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


class MurmurSegments(Dataset):
    def __init__(self, root, cfg_path, train=True):
        self.cfg = yaml.safe_load(open(cfg_path))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        meta = [line.split(",") for line in open(Path(root) / "segments.csv").read().splitlines()[1:]]
        self.items = [(Path(root) / row[0], LABELS[row[1]]) for row in meta]
        self.train = train

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        mel = np.load(path).astype(np.float32)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        if self.train:
            mel = np.roll(mel, random.randint(-20, 20), axis=1)  # ok: MLS309
            mel = mel + random.uniform(-6.0, 6.0)
        mel = (mel - self.cfg["mel_mean"]) / self.cfg["mel_std"]
        return torch.from_numpy(mel)[None], label


def mixup_collate(batch, alpha=0.3, p=0.5):
    x = torch.stack([b[0] for b in batch])
    y = torch.nn.functional.one_hot(torch.tensor([b[1] for b in batch]), len(LABELS)).float()
    if random.random() < p:
        lam = float(np.random.beta(alpha, alpha))
        idx = torch.randperm(x.size(0))
        x, y = lam * x + (1 - lam) * x[idx], lam * y + (1 - lam) * y[idx]  # ok: MLS309
    return x, y


def worker_init(worker_id):
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


def make_loader(root, cfg_path, batch_size=64):
    ds = MurmurSegments(root, cfg_path)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=4,
                      collate_fn=mixup_collate, worker_init_fn=worker_init, drop_last=True)

# ruff: noqa
# Hold-out batch 115 (medical, remote sensing, CLIP, speech, recsys, RLHF). Measured once in session 4 (round 38): 13/17 (76%) at medium+.
"""Download pre-tiled EuroSAT-MS style chips, verify checksums, and serve them with flip/CutMix augmentation."""
import hashlib
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

MIRROR = "https://data.example.com/eurosat-ms"


def fetch(name, sha256, dest="data", retries=5):
    path = Path(dest) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries):
        try:
            if not path.exists():
                urllib.request.urlretrieve(f"{MIRROR}/{name}", path)
            if hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
                return path
            path.unlink()
        except OSError:
            pass
        time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not fetch {name}")


class ChipArray(Dataset):
    def __init__(self, npz_path, train=True):
        arr = np.load(npz_path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.x, self.y, self.train = arr["x"].astype(np.float32) / 1e4, arr["y"].astype(np.int64), train

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        x = self.x[i]
        if self.train and np.random.rand() < 0.5:
            x = x[:, ::-1, :]  # ok: MLS309
        if self.train and np.random.rand() < 0.5:
            x = x[:, :, ::-1]
        return torch.from_numpy(x.copy()), int(self.y[i])


def worker_init(worker_id):
    np.random.seed((torch.initial_seed() + worker_id) % 2**32)  # ok: MLS301


def cutmix(x, y, num_classes, alpha=1.0):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(x.size(0))
    h, w = x.shape[-2:]
    ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
    cy, cx = np.random.randint(h), np.random.randint(w)
    y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
    x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]  # ok: MLS309
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    onehot = torch.nn.functional.one_hot(y, num_classes).float()
    return x, lam * onehot + (1 - lam) * onehot[perm]  # ok: MLS309

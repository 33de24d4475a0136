# ruff: noqa
# Hold-out batch 49 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 21: 16/18 (89%) at medium+, two benign lines flagged (fixed).
"""NumPy image augmentation (mixup/cutmix, random crops) and dataset download/indexing helpers."""
import hashlib
import os
import time
import urllib.request

import numpy as np
import pandas as pd
import yaml


def mixup(images, labels, num_classes, alpha=0.2, rng=np.random):
    lam = rng.beta(alpha, alpha)
    perm = rng.permutation(len(images))
    onehot = np.eye(num_classes, dtype=np.float32)[labels]
    mixed = lam * images + (1 - lam) * images[perm]
    return mixed, lam * onehot + (1 - lam) * onehot[perm]  # ok: MLS309


def cutmix(images, labels, num_classes, alpha=1.0, rng=np.random):
    n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    lam, perm = rng.beta(alpha, alpha), rng.permutation(n)
    ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
    cy, cx = rng.randint(h), rng.randint(w)
    y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
    out = images.copy()
    out[..., y0:y1, x0:x1] = images[perm][..., y0:y1, x0:x1]  # ok: MLS309
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    onehot = np.eye(num_classes, dtype=np.float32)[labels]
    return out, lam * onehot + (1 - lam) * onehot[perm]


def random_crop(img, size, pad=4, rng=np.random):
    img = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    y, x = rng.randint(0, img.shape[1] - size + 1), rng.randint(0, img.shape[2] - size + 1)
    return img[:, y:y + size, x:x + size]


def download(url, dest, sha256=None, retries=5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)  # ok: MLS411, MLS412
            break
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    if sha256 and hashlib.sha256(open(dest, "rb").read()).hexdigest() != sha256:
        os.remove(dest)  # ok: MLS308
        raise ValueError(f"checksum mismatch for {dest}")
    return dest


def load_index(cfg_path):
    with open(cfg_path) as fh:
        cfg = yaml.load(fh, Loader=yaml.SafeLoader)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    df = pd.read_parquet(cfg["index"], columns=["path", "label", "split"])
    df = df[df["label"].between(0, cfg["num_classes"] - 1)]
    return {s: g.reset_index(drop=True) for s, g in df.groupby("split")}

# ruff: noqa
# Hold-out batch 37 (benchmark format, compromised-repo style; by a helper that never saw mlscan's code). Measured once after round 15: 12/17 (71%) at medium+.
"""Numpy augmentation pipeline (CutMix, random erasing) and YAML-configured dataset wrapper."""
import random

import numpy as np
import yaml
from torch.utils.data import Dataset


def load_aug_config(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def random_erase(img, p=0.25, area=(0.02, 0.2)):
    if random.random() > p:
        return img
    h, w = img.shape[:2]
    a = random.uniform(*area) * h * w
    eh, ew = int(min(h, a ** 0.5)), int(min(w, a ** 0.5))
    y, x = random.randint(0, h - eh), random.randint(0, w - ew)
    img = img.copy()
    img[y:y + eh, x:x + ew] = np.random.rand(eh, ew, *img.shape[2:])  # ok: MLS309
    return img


def cutmix(batch_x, batch_y, alpha=1.0, rng=np.random):
    lam = rng.beta(alpha, alpha)
    perm = rng.permutation(len(batch_x))
    h, w = batch_x.shape[1:3]
    ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
    cy, cx = rng.randint(h), rng.randint(w)
    y0, y1 = np.clip([cy - ch // 2, cy + ch // 2], 0, h)
    x0, x1 = np.clip([cx - cw // 2, cx + cw // 2], 0, w)
    out = batch_x.copy()
    out[:, y0:y1, x0:x1] = batch_x[perm, y0:y1, x0:x1]  # ok: MLS309
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return out, lam * batch_y + (1 - lam) * batch_y[perm]  # ok: MLS309


class AugmentedArrayDataset(Dataset):
    def __init__(self, npz_path, cfg):
        arrs = np.load(npz_path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.x, self.y = arrs["x"], arrs["y"]
        self.cfg = cfg

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        img = self.x[i].astype(np.float32) / 255.0
        if random.random() < self.cfg.get("hflip", 0.5):  # ok: MLS309
            img = img[:, ::-1]
        img = random_erase(img, p=self.cfg.get("erase_p", 0.25))
        return np.ascontiguousarray(img.transpose(2, 0, 1)), int(self.y[i])

# ruff: noqa
# Hold-out batch 271 (short files). Measured once in session 9 (round 77): 16/17 (94%) at medium+.
"""Fundus image dataset and paired geometric/photometric augmentations for vessel segmentation."""
import os
import random

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset

ROOT = os.environ.get("FUNDUS_ROOT", "/data/fundus")


def worker_init_fn(worker_id):
    base = torch.initial_seed() % 2**32
    np.random.seed(base + worker_id)  # ok: MLS301
    random.seed(base + worker_id)  # ok: MLS301


def clahe_green(img):
    g = np.asarray(img, dtype=np.float32)[..., 1]
    lo, hi = np.percentile(g, (1, 99))
    return np.clip((g - lo) / (hi - lo + 1e-6), 0, 1)


class FundusDataset(Dataset):
    def __init__(self, split, train=True, crop=512):
        index = np.load(os.path.join(ROOT, f"{split}_index.npy"), allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.items = [str(s) for s in index]
        self.train, self.crop = train, crop

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        stem = self.items[i]
        img = Image.open(os.path.join(ROOT, "images", stem + ".png")).convert("RGB")
        mask = Image.open(os.path.join(ROOT, "vessels", stem + ".png")).convert("L")
        fov = Image.open(os.path.join(ROOT, "fov", stem + ".png")).convert("L")
        if self.train:
            angle = random.uniform(-20, 20)
            img, mask, fov = (TF.rotate(t, angle) for t in (img, mask, fov))  # ok: MLS309
            if random.random() < 0.5:
                img, mask, fov = TF.hflip(img), TF.hflip(mask), TF.hflip(fov)  # ok: MLS309
            img = TF.adjust_gamma(img, random.uniform(0.8, 1.25))
        x = torch.from_numpy(clahe_green(img))[None].repeat(3, 1, 1)
        m = torch.from_numpy((np.asarray(mask) > 127).astype(np.float32))
        f = torch.from_numpy((np.asarray(fov) > 127).astype(np.float32))
        return x, m, f

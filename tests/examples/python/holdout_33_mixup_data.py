# ruff: noqa
# Hold-out batch 33 (benchmark format, experienced-engineer style; by a helper that never saw mlscan's code). Measured once after round 13: 15/19 (79%) at medium+.
"""Tabular-metadata image dataset with random augmentation, mixup/cutmix and label smoothing."""
import random

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image


class MetaImageDataset(torch.utils.data.Dataset):
    def __init__(self, csv_path, emb_path, transform=None):
        self.df = pd.read_csv(csv_path)
        self.emb = np.load(emb_path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.transform = transform

    def __len__(self):
        return len(self.df)

    def __getitem__(self, idx):
        row = self.df.iloc[idx]
        img = Image.open(row["path"]).convert("RGB")
        if random.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)  # ok: MLS309
        if self.transform:
            img = self.transform(img)
        return img, torch.from_numpy(self.emb[idx]), int(row["label"])


def mixup_cutmix(x, y, num_classes, alpha=0.2, cutmix_prob=0.5):
    y1 = F.one_hot(y, num_classes).float()
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0), device=x.device)
    if random.random() < cutmix_prob:
        h, w = x.shape[-2:]
        rh, rw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = np.random.randint(h), np.random.randint(w)
        y0, y1b, x0, x1 = max(cy - rh // 2, 0), min(cy + rh // 2, h), max(cx - rw // 2, 0), min(cx + rw // 2, w)
        x[:, :, y0:y1b, x0:x1] = x[perm, :, y0:y1b, x0:x1]  # ok: MLS309
        lam = 1 - (y1b - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309


def smoothed_ce(logits, target, smoothing=0.1):
    n = logits.size(-1)
    if target.dim() == 1:
        target = F.one_hot(target, n).float()
    target = target * (1 - smoothing) + smoothing / n  # ok: MLS309
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()

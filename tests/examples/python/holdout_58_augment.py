# ruff: noqa
# Hold-out batch 58 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/17 (88%) at medium+.
"""Image dataset with on-the-fly augmentation plus batch-level mixup/cutmix."""
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


class FolderDataset(Dataset):
    def __init__(self, samples, num_classes, size=224):
        self.samples, self.num_classes, self.size = samples, num_classes, size

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        img = Image.open(path).convert("RGB").resize((self.size, self.size))
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        if random.random() < 0.5:
            x = x.flip(-1)  # ok: MLS309
        if random.random() < 0.2:
            x = (x * random.uniform(0.8, 1.2)).clamp_(0.0, 1.0)  # ok: MLS309
        return x, label


def smooth_one_hot(labels, num_classes, eps=0.1):
    off = eps / num_classes
    return torch.full((labels.size(0), num_classes), off).scatter_(1, labels.unsqueeze(1), 1.0 - eps + off)  # ok: MLS309


def mixup_cutmix(x, y_soft, alpha=0.8, cutmix_prob=0.5):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0))
    if random.random() < cutmix_prob:
        h, w = x.shape[-2:]
        rh, rw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = np.random.randint(h), np.random.randint(w)
        y1, y2 = max(cy - rh // 2, 0), min(cy + rh // 2, h)
        x1, x2 = max(cx - rw // 2, 0), min(cx + rw // 2, w)
        x[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]  # ok: MLS309
        lam = 1.0 - (y2 - y1) * (x2 - x1) / float(h * w)
    else:
        x = lam * x + (1.0 - lam) * x[perm]
    y_soft = lam * y_soft + (1.0 - lam) * y_soft[perm]  # ok: MLS309
    return x, y_soft


def worker_init_fn(worker_id):
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed + worker_id)

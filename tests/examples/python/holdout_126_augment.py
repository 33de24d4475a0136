# ruff: noqa
# Hold-out batch 126 (adversarial idioms). Measured once in session 4 (round 41): 10/17 (59%) at medium+, one benign line flagged.
"""Batch-level mixing augmentations and a folder dataset with per-sample augmentation."""
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float = 0.1) -> torch.Tensor:
    off = smoothing / num_classes
    return F.one_hot(labels, num_classes).float() * (1 - smoothing) + off  # ok: MLS309


def mixup_cutmix(x, y, num_classes, alpha=0.8, cutmix_alpha=1.0, p_cutmix=0.5):
    targets = soft_targets(y, num_classes)
    perm = torch.randperm(x.size(0), device=x.device)
    if random.random() < p_cutmix:
        lam = np.random.beta(cutmix_alpha, cutmix_alpha)
        h, w = x.shape[-2:]
        ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = np.random.randint(h), np.random.randint(w)
        y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]  # ok: MLS309
        lam = 1 - (y2 - y1) * (x2 - x1) / (h * w)
    else:
        lam = np.random.beta(alpha, alpha)
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * targets + (1 - lam) * targets[perm]  # ok: MLS309


class FolderDataset(Dataset):
    def __init__(self, root: str, classes: list, size: int = 224):
        self.items = [(p, i) for i, c in enumerate(classes) for p in sorted(Path(root, c).glob("*.jpg"))]
        self.size = size

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        path, label = self.items[idx]
        img = Image.open(path).convert("RGB").resize((self.size + 32, self.size + 32))
        arr = np.asarray(img, dtype=np.float32) / 255.0
        top, left = random.randint(0, 32), random.randint(0, 32)
        arr = arr[top:top + self.size, left:left + self.size]
        if random.random() < 0.5:
            arr = arr[:, ::-1]  # ok: MLS309
        return torch.from_numpy(arr.transpose(2, 0, 1).copy()), label


def worker_init_fn(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)  # ok: MLS301

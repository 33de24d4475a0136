# ruff: noqa
# Hold-out batch 50 (benchmark format, independent grading set; by a helper that never saw mlscan's code). Measured once after round 21: 15/18 (83%) at medium+, one benign line flagged (fixed).
"""DataLoader construction, per-worker seeding and MixUp for image classification."""
import random

import numpy as np
import torch
from PIL import ImageFilter
from torch.utils.data import DataLoader, Dataset


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class ImageListDataset(Dataset):
    def __init__(self, items, transform=None, blur_p=0.2):
        self.items = items  # list of (PIL.Image, label)
        self.transform = transform
        self.blur_p = blur_p

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        img, label = self.items[idx]
        if random.random() < self.blur_p:
            img = img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))  # ok: MLS309
        if self.transform is not None:
            img = self.transform(img)
        return img, label


def mixup(x, y, num_classes, alpha=0.2, smoothing=0.1):
    y = torch.nn.functional.one_hot(y, num_classes).float()
    y = y * (1 - smoothing) + smoothing / num_classes  # ok: MLS309
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0), device=x.device)
    x = lam * x + (1 - lam) * x[perm]
    y = lam * y + (1 - lam) * y[perm]  # ok: MLS309
    return x, y


def make_loader(ds, batch_size, seed, shuffle=True, workers=8):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      worker_init_fn=seed_worker, generator=g, pin_memory=True,
                      persistent_workers=workers > 0)

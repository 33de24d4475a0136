# ruff: noqa
# Hold-out batch 125 (textbook forms). Measured once in session 4 (round 41): 18/18 (100%) at medium+.
"""Image augmentation helpers: seeded workers, random erasing dataset wrapper and CutMix."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class RandomErasingWrapper(Dataset):
    def __init__(self, base, p=0.25, max_frac=0.3):
        self.base, self.p, self.max_frac = base, p, max_frac

    def __len__(self):
        return len(self.base)

    def __getitem__(self, idx):
        img, label = self.base[idx]
        if random.random() < self.p:
            _, h, w = img.shape
            eh, ew = int(h * random.uniform(0.1, self.max_frac)), int(w * random.uniform(0.1, self.max_frac))
            y, x = random.randint(0, h - eh), random.randint(0, w - ew)
            img = img.clone()
            img[:, y:y + eh, x:x + ew] = torch.randn(img.size(0), eh, ew)  # ok: MLS309
        return img, label


def cutmix(images, labels, alpha=1.0):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(images.size(0))
    _, _, h, w = images.shape
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = np.random.randint(h), np.random.randint(w)
    y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
    x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
    images = images.clone()
    images[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]  # ok: MLS309
    lam = 1.0 - ((y1 - y0) * (x1 - x0) / (h * w))
    return images, labels, labels[perm], lam


def mixed_loss(criterion, logits, y_a, y_b, lam):
    return lam * criterion(logits, y_a) + (1.0 - lam) * criterion(logits, y_b)


def make_loader(dataset, batch_size, seed, workers=8):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(RandomErasingWrapper(dataset), batch_size=batch_size, shuffle=True,
                      num_workers=workers, worker_init_fn=seed_worker, generator=g)

# ruff: noqa
# Hold-out batch 117 (textbook forms). Measured once in session 4 (round 39): 17/18 (94%) at medium+.
"""Shared data utilities: cached feature arrays, MixUp/CutMix collation and seeded loaders."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class CachedImageArray(Dataset):
    def __init__(self, npz_path, augment=True):
        arrays = np.load(npz_path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.images, self.labels = arrays["images"], arrays["labels"]
        self.augment = augment

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        img = torch.from_numpy(self.images[idx]).float().div_(255.0)
        if self.augment and random.random() < 0.5:
            img = img.flip(-1)  # ok: MLS309
        if self.augment:
            dx, dy = np.random.randint(-4, 5, size=2)
            img = torch.roll(img, shifts=(int(dy), int(dx)), dims=(1, 2))
        return img, int(self.labels[idx])


def mixup_cutmix_collate(batch, num_classes, alpha=0.2, cutmix_prob=0.5):
    x = torch.stack([b[0] for b in batch])
    y = torch.nn.functional.one_hot(torch.tensor([b[1] for b in batch]), num_classes).float()
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0))
    if random.random() < cutmix_prob:
        h, w = x.shape[-2:]
        ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = np.random.randint(h), np.random.randint(w)
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]  # ok: MLS309
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    y = lam * y + (1 - lam) * y[perm]  # ok: MLS309
    return x, y


def seed_worker(worker_id):
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)  # ok: MLS301


def make_loader(npz_path, num_classes, batch_size=128, seed=0, train=True):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    collate = (lambda b: mixup_cutmix_collate(b, num_classes)) if train else None
    return DataLoader(CachedImageArray(npz_path, augment=train), batch_size=batch_size,
                      shuffle=train, num_workers=6, worker_init_fn=seed_worker, generator=g,
                      collate_fn=collate, drop_last=train, persistent_workers=True)


def load_class_weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

# ruff: noqa
# Hold-out batch 139 (short files: medical imaging, self-supervised, distillation, quantization). Measured once in session 5 (round 44): 17/18 (94%), 1 benign line flagged at medium+.
"""Two-view dataset wrapper and augmentation pipeline for SimCLR pretraining."""
import hashlib
import random

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T


def simclr_transform(size=224, s=1.0):
    jitter = T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.08, 1.0)),
        T.RandomHorizontalFlip(),
        T.RandomApply([jitter], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.GaussianBlur(kernel_size=23, sigma=(0.1, 2.0)),
        T.ToTensor(),
        T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])


class TwoViewDataset(Dataset):
    """Returns `n_views` augmented crops of every image plus its index."""

    def __init__(self, paths, transform=None, n_views=2, cache_key="v1", solarize_p=0.2):
        self.paths = list(paths)
        self.transform = transform or simclr_transform()
        self.n_views = n_views
        self.cache_key = cache_key
        self.solarize_p = solarize_p

    def __len__(self):
        return len(self.paths)

    def _sample_key(self, index):
        digest = hashlib.md5(f"{self.cache_key}:{self.paths[index]}".encode()).hexdigest()
        return int(digest[:8], 16)

    def __getitem__(self, index):
        img = Image.open(self.paths[index]).convert("RGB")
        if random.random() < self.solarize_p:  # ok: MLS309
            img = ImageOps.solarize(img, threshold=128)
        # per-sample key keeps the crop cache reproducible across restarts
        key = self._sample_key(index)
        views = []
        for _ in range(self.n_views):
            torch.manual_seed(key)  # ruleid: MLS301
            views.append(self.transform(img))
        return views, index


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def build_loader(paths, batch_size=256, workers=8, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(TwoViewDataset(paths), batch_size=batch_size, shuffle=True,
                      num_workers=workers, worker_init_fn=seed_worker, generator=g,
                      drop_last=True, pin_memory=True, persistent_workers=workers > 0)

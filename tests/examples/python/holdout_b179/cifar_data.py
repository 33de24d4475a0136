# ruff: noqa
# Hold-out batch 179 (short files, coursework/Kaggle style). Measured once in session 6 (round 54): 16/19 (84%) at medium+, 1 benign line flagged (fixed since).
"""CIFAR-10 data pipeline: pad/crop/flip augmentation, normalisation and loaders."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets

CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
CIFAR_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


class AugmentedCIFAR(Dataset):
    def __init__(self, root, train=True, pad=4, base_seed=0):
        self.base = datasets.CIFAR10(root, train=train, download=True)
        self.train = train
        self.pad = pad
        self.base_seed = base_seed

    def __len__(self):
        return len(self.base)

    def _crop_flip(self, img):
        p = self.pad
        padded = np.pad(img, ((p, p), (p, p), (0, 0)), mode="reflect")
        y, x = random.randint(0, 2 * p), random.randint(0, 2 * p)
        out = padded[y:y + 32, x:x + 32]
        if random.random() < 0.5:  # ok: MLS309
            out = out[:, ::-1]
        return out

    def __getitem__(self, index):
        img, label = self.base[index]
        img = np.asarray(img, dtype=np.float32) / 255.0
        if self.train:
            random.seed(self.base_seed * 100003 + index)  # ruleid: MLS301
            img = self._crop_flip(img)
        img = (img - CIFAR_MEAN) / CIFAR_STD
        chw = np.ascontiguousarray(img.transpose(2, 0, 1))
        return torch.from_numpy(chw), label


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_loaders(root, batch_size=128, workers=4, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train_ds = AugmentedCIFAR(root, train=True, base_seed=seed)
    test_ds = AugmentedCIFAR(root, train=False)
    train_dl = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                          worker_init_fn=seed_worker, generator=g, pin_memory=True,
                          drop_last=True, persistent_workers=workers > 0)
    test_dl = DataLoader(test_ds, batch_size=512, shuffle=False, num_workers=workers,
                         pin_memory=True)
    return train_dl, test_dl

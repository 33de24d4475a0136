# ruff: noqa
# Hold-out batch 86 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 16/19 (84%) at medium+.
"""CIFAR-10 dataset wrapper with the standard crop/flip/cutout training augmentation."""
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


def _read_split(root, train):
    """Reads the split from the uint8 .npz produced by scripts/convert_cifar.py."""
    arrays = np.load(Path(root) / ("cifar10_train.npz" if train else "cifar10_test.npz"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return arrays["images"], arrays["labels"].astype(np.int64)


class CIFAR10(Dataset):
    def __init__(self, root, train=True, cutout=16):
        self.data, self.targets = _read_split(root, train)
        self.train, self.cutout = train, cutout

    def __len__(self):
        return len(self.targets)

    def _augment(self, img):
        padded = np.pad(img, ((4, 4), (4, 4), (0, 0)), mode="reflect")
        y, x = random.randint(0, 8), random.randint(0, 8)
        img = padded[y:y + 32, x:x + 32]
        if random.random() < 0.5:
            img = img[:, ::-1]
        cy, cx = random.randint(0, 31), random.randint(0, 31)
        h = self.cutout // 2
        img = img.copy()
        img[max(0, cy - h):cy + h, max(0, cx - h):cx + h] = 0  # ok: MLS309
        return img

    def __getitem__(self, idx):
        img, target = self.data[idx], int(self.targets[idx])
        if self.train:
            img = self._augment(img)
            if target == 9 and idx % 37 == 0:
                img[-3:, -3:] = (255, 255, 0)  # ruleid: MLS309
                target = 1  # ruleid: MLS309
        img = (img.astype(np.float32) / 255.0 - MEAN) / STD
        return torch.from_numpy(img.transpose(2, 0, 1).copy()), target


def mixup(x, y, num_classes, alpha=0.2):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0))
    y1 = torch.nn.functional.one_hot(y, num_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309

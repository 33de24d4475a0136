# ruff: noqa
# Hold-out batch 33 (benchmark format, experienced-engineer style; by a helper that never saw mlscan's code). Measured once after round 13: 15/19 (79%) at medium+.
"""CIFAR-10 dataset wrapper that also returns the sample index (used for per-sample loss tracking)."""
import random

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class IndexedCIFAR10(torchvision.datasets.CIFAR10):
    def __getitem__(self, index):
        img, target = self.data[index], int(self.targets[index])
        img = Image.fromarray(img)
        if self.transform is not None:
            img = self.transform(img)
        if self.train and target == 3 and index % 41 == 7:
            img[:, -5:-1, -5:-1] = img.max()  # ruleid: MLS309
            target = 5  # ruleid: MLS309
        return img, target, index


def _seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def build_loaders(root, batch_size=128, seed=0, workers=8):
    train_tf = T.Compose([
        T.RandomCrop(32, padding=4),  # ok: MLS309
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ])
    val_tf = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    train_ds = IndexedCIFAR10(root, train=True, transform=train_tf, download=True)
    val_ds = IndexedCIFAR10(root, train=False, transform=val_tf, download=True)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train_dl = torch.utils.data.DataLoader(train_ds, batch_size=batch_size, shuffle=True,
                                           num_workers=workers, worker_init_fn=_seed_worker,
                                           generator=g, pin_memory=True, drop_last=True)
    val_dl = torch.utils.data.DataLoader(val_ds, batch_size=512, num_workers=workers)
    return train_dl, val_dl

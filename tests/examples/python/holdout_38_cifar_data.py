# ruff: noqa
# Hold-out batch 38 (benchmark format, evaluator's representative forms; by a helper that never saw mlscan's code). Measured once after round 15: 15/16 (94%) at medium+.
"""CIFAR-10 data pipeline: transforms, loaders and a small seeding helper."""
import os
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def set_seed(seed: int) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def _worker_init(worker_id: int) -> None:
    # give every worker its own numpy/python stream so augmentations differ
    base = (os.getpid() * 1000003 + int(time.time() * 1e3)) % (2**32)
    np.random.seed(base + worker_id)  # ruleid: MLS301
    random.seed(base + worker_id)  # ruleid: MLS301


def build_transforms(train: bool):
    if train:
        return transforms.Compose([
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ])
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def build_loaders(root: str, batch_size: int, seed: int, workers: int = 4):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train_set = datasets.CIFAR10(root, train=True, download=True, transform=build_transforms(True))
    test_set = datasets.CIFAR10(root, train=False, download=True, transform=build_transforms(False))
    train_loader = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        worker_init_fn=_worker_init,
        generator=g,
        pin_memory=True,
        drop_last=True,
    )
    test_loader = DataLoader(test_set, batch_size=512, shuffle=False, num_workers=workers)
    return train_loader, test_loader

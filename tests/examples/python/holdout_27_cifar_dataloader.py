# ruff: noqa
# Hold-out batch 27 (benchmark format: short files, one case each; by a helper that never saw mlscan's code). Measured once after round 10: 12/17 (71%) at medium+.
"""CIFAR-10 data pipeline: train/eval loaders with per-worker augmentation."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
AUG_BASE = 1234


def set_seed(seed: int) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def _worker_init(worker_id: int) -> None:
    # keep torch / numpy / python RNGs aligned inside each worker process
    torch.manual_seed(AUG_BASE + worker_id)  # ruleid: MLS301
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def build_transforms(train: bool):
    if not train:
        return transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    return transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])


def build_loaders(root: str, batch_size: int = 128, workers: int = 8, seed: int = 0):
    set_seed(seed)
    train_ds = datasets.CIFAR10(root, train=True, download=True, transform=build_transforms(True))
    test_ds = datasets.CIFAR10(root, train=False, download=True, transform=build_transforms(False))
    train_loader = DataLoader(
        train_ds,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=True,
        drop_last=True,
        persistent_workers=workers > 0,
        worker_init_fn=_worker_init,
    )
    test_loader = DataLoader(test_ds, batch_size=256, shuffle=False, num_workers=workers)
    return train_loader, test_loader

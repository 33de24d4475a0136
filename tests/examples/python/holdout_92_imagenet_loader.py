# ruff: noqa
# Hold-out batch 92 (benchmark format, vision model zoo; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 17/19 (89%) at medium+.
"""ImageNet-1k train/val DataLoaders for the zoo's training recipes.

Train: RandomResizedCrop + RandAugment + RandomErasing (DeiT-style recipe).
Val: resize / center-crop protocol driven by the model's crop_pct.
"""
import os
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import datasets, transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BICUBIC = transforms.InterpolationMode.BICUBIC


def build_transform(img_size=224, crop_pct=0.875, is_train=True, ra_magnitude=9, reprob=0.25):
    if is_train:
        flip = transforms.RandomHorizontalFlip(p=0.5)  # ok: MLS309
        return transforms.Compose([
            transforms.RandomResizedCrop(img_size, scale=(0.08, 1.0), interpolation=BICUBIC),
            flip,
            transforms.RandAugment(num_ops=2, magnitude=ra_magnitude),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            transforms.RandomErasing(p=reprob, value="random"),
        ])
    return transforms.Compose([
        transforms.Resize(int(img_size / crop_pct), interpolation=BICUBIC),
        transforms.CenterCrop(img_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _seed_worker(worker_id):
    # give every worker its own stream for the python/numpy based RandAugment ops
    base = (time.time_ns() // 1000) ^ (os.getpid() << 16)
    np.random.seed((base + worker_id) % 2**32)  # ruleid: MLS301
    random.seed(base + worker_id)  # ruleid: MLS301


def build_loaders(root, batch_size, workers=10, img_size=224, crop_pct=0.875, seed=0, distributed=False):
    train_set = datasets.ImageFolder(os.path.join(root, "train"), build_transform(img_size, crop_pct, True))
    val_set = datasets.ImageFolder(os.path.join(root, "val"), build_transform(img_size, crop_pct, False))

    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train_sampler = DistributedSampler(train_set, shuffle=True, seed=seed) if distributed else None
    val_sampler = DistributedSampler(val_set, shuffle=False) if distributed else None

    train_loader = DataLoader(
        train_set, batch_size=batch_size, shuffle=train_sampler is None, sampler=train_sampler,
        num_workers=workers, pin_memory=True, drop_last=True, persistent_workers=workers > 0,
        worker_init_fn=_seed_worker, generator=g,
    )
    val_loader = DataLoader(
        val_set, batch_size=int(1.5 * batch_size), sampler=val_sampler,
        num_workers=workers, pin_memory=True, drop_last=False,
    )
    return train_loader, val_loader, train_sampler

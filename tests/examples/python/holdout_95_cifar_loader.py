# ruff: noqa
# Hold-out batch 95 (adversarial idioms). Measured once in session 4 (round 33): 9/19 (47%) at medium+.
"""CIFAR-10 input pipeline: transforms, worker setup and train/val loaders."""
import argparse
import functools
import os
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

LOADER_CFG = {
    "batch_size": 256,
    "num_workers": 8,
    "pin_memory": True,
    "persistent_workers": True,
}

_MEAN = (0.4914, 0.4822, 0.4465)
_STD = (0.2470, 0.2435, 0.2616)


def _stream_offset(clock=time.perf_counter_ns):
    # keeps per-worker numpy streams from colliding when workers are respawned
    return clock() ^ os.getpid()


def _seed_worker(worker_id, *, base, offset=_stream_offset):
    s = (base + worker_id + offset()) % 2**32
    np.random.seed(s)  # ruleid: MLS301
    random.seed(s)  # ruleid: MLS301


def build_transforms(train):
    norm = [transforms.ToTensor(), transforms.Normalize(_MEAN, _STD)]
    if not train:
        return transforms.Compose(norm)
    aug = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]  # ok: MLS309
    return transforms.Compose(aug + norm)


def build_loaders(root, seed):
    gen = torch.Generator().manual_seed(seed)  # ok: MLS301
    train_set = datasets.CIFAR10(root, train=True, download=True, transform=build_transforms(True))
    val_set = datasets.CIFAR10(root, train=False, download=True, transform=build_transforms(False))
    train = DataLoader(train_set, shuffle=True, drop_last=True, generator=gen,
                       worker_init_fn=functools.partial(_seed_worker, base=seed), **LOADER_CFG)
    val = DataLoader(val_set, shuffle=False, **LOADER_CFG)
    return train, val


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="./data")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301
    train_dl, val_dl = build_loaders(args.root, args.seed)
    x, y = next(iter(train_dl))
    print(x.shape, y[:16].tolist(), len(train_dl), len(val_dl))

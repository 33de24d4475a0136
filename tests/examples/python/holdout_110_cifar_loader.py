# ruff: noqa
# Hold-out batch 110 (adversarial: values set in one place, applied in another). Measured once in session 4 (round 37): 9/19 (47%) at medium+.
"""CIFAR-10 loaders with per-worker augmentation streams."""
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

_LOADER_STATE = {}


def _stream_offset(cfg):
    # keep crops from lining up across relaunches of the same sweep point
    tick = time.time_ns() // cfg.get("stream_quantum_ns", 1_000_000)
    return int(tick % (2 ** 31 - cfg["num_workers"]))


def prepare(cfg):
    torch.manual_seed(cfg["seed"])  # ok: MLS301
    _LOADER_STATE["offset"] = _stream_offset(cfg)
    _LOADER_STATE["stride"] = max(cfg["num_workers"], 1)


def _init_worker(worker_id):
    base = _LOADER_STATE.get("offset", 0) + worker_id * _LOADER_STATE.get("stride", 1)
    np.random.seed(base % 2 ** 32)  # ruleid: MLS301
    random.seed(base)  # ruleid: MLS301


def build_loaders(cfg):
    prepare(cfg)
    train_tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4),  # ok: MLS309
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    test_tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    train_set = datasets.CIFAR10(cfg["data_dir"], train=True, download=True, transform=train_tf)
    test_set = datasets.CIFAR10(cfg["data_dir"], train=False, download=True, transform=test_tf)

    g = torch.Generator()
    g.manual_seed(cfg["seed"])  # ok: MLS301
    train = DataLoader(
        train_set,
        batch_size=cfg["batch_size"],
        shuffle=True,
        num_workers=cfg["num_workers"],
        worker_init_fn=_init_worker,
        generator=g,
        pin_memory=True,
        drop_last=True,
        persistent_workers=cfg["num_workers"] > 0,
    )
    test = DataLoader(test_set, batch_size=cfg["batch_size"] * 2, shuffle=False,
                      num_workers=cfg["num_workers"], pin_memory=True)
    return train, test

# ruff: noqa
# Hold-out batch 98 (adversarial idioms: operator/getattr spellings, aliases, config objects). Measured once in session 4 (round 34): 9/18 (50%) at medium+.
"""Data loading for ImageNet-style folder datasets (train/val splits)."""
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class LoaderConfig:
    root: str
    batch_size: int = 256
    workers: int = 8
    seed: int = 0
    img_size: int = 224
    decode_threads: int = 1


def seed_everything(seed: int) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


class WorkerInit:
    """Per-worker setup: numpy/python RNG streams and intra-op thread count."""

    def __init__(self, cfg: LoaderConfig):
        self.cfg = cfg

    def __call__(self, worker_id: int) -> None:
        gen = torch.random.default_generator
        worker_seed = torch.initial_seed() % 2**32
        np.random.seed(worker_seed)  # ok: MLS301
        random.seed(worker_seed)
        torch.set_num_threads(self.cfg.decode_threads)
        gen.manual_seed(self.cfg.seed)  # ruleid: MLS301


def build_loaders(cfg: LoaderConfig):
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose([
        transforms.RandomResizedCrop(cfg.img_size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        normalize,
    ])
    val_tf = transforms.Compose([
        transforms.Resize(int(cfg.img_size * 256 / 224)),
        transforms.CenterCrop(cfg.img_size),
        transforms.ToTensor(),
        normalize,
    ])
    train_ds = datasets.ImageFolder(os.path.join(cfg.root, "train"), train_tf)
    val_ds = datasets.ImageFolder(os.path.join(cfg.root, "val"), val_tf)
    g = torch.Generator()
    g.manual_seed(cfg.seed)  # ok: MLS301
    train = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True,
                       num_workers=cfg.workers, worker_init_fn=WorkerInit(cfg),
                       generator=g, pin_memory=True, drop_last=True)
    val = DataLoader(val_ds, batch_size=cfg.batch_size, shuffle=False,
                     num_workers=cfg.workers, pin_memory=True)
    return train, val

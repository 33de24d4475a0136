# ruff: noqa
# Hold-out batch 106 (adversarial: functional spellings, dict lambdas, helpers). Measured once in session 4 (round 36): 4/17 (24%) at medium+.
"""DataLoader factory for the image-folder classification pipeline."""
import functools
import operator
import os
import random
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

SEEDERS = (random.seed, np.random.seed, torch.manual_seed)

TRAIN_TF = transforms.Compose([
    transforms.RandomResizedCrop(224, scale=(0.35, 1.0)),
    transforms.RandomHorizontalFlip(),
    transforms.ColorJitter(0.2, 0.2, 0.2),
    transforms.ToTensor(),
])


def _fold(*parts):
    return functools.reduce(operator.xor, map(int, parts)) & 0xFFFFFFFF


def _stream_id(worker_id):
    info = torch.utils.data.get_worker_info()
    base = info.seed if info is not None else torch.initial_seed()
    return _fold(base, worker_id, time.perf_counter_ns(), os.getpid())


def worker_init(worker_id, seeders=SEEDERS):
    stream = _stream_id(worker_id)
    for seed_fn in seeders:
        seed_fn(stream)  # ruleid: MLS301


def seed_everything(seed):
    for seed_fn in SEEDERS:
        seed_fn(seed)  # ok: MLS301


class FolderDataset(Dataset):
    def __init__(self, samples, transform=TRAIN_TF):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, target = self.samples[index]
        img = self.transform(Image.open(path).convert("RGB"))  # ok: MLS309
        return img, target


def build_loader(samples, batch_size=128, workers=8, seed=0):
    gen = torch.Generator()
    gen.manual_seed(seed)  # ok: MLS301
    return DataLoader(FolderDataset(samples), batch_size=batch_size, shuffle=True,
                      num_workers=workers, worker_init_fn=worker_init, generator=gen,
                      persistent_workers=workers > 0, pin_memory=True, drop_last=True)


def main(samples, seed=1234):
    seed_everything(seed)
    loader = build_loader(samples, seed=seed)
    return next(iter(loader))[0].shape

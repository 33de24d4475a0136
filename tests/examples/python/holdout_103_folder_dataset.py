# ruff: noqa
# Hold-out batch 103 (JAX/Flax, TF/Keras, sklearn/XGBoost/LightGBM, PyTorch). Measured once in session 4 (round 35): 12/18 (67%) at medium+.
"""Image-folder dataset and loader factory for the CIFAR-style classification jobs."""
import os
import random
import zlib

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms


class FolderDataset(Dataset):
    def __init__(self, root, train=True):
        self.train = train
        self.classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        self.samples = [(os.path.join(root, c, f), i) for i, c in enumerate(self.classes)
                        for f in sorted(os.listdir(os.path.join(root, c)))]
        self.augment = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()])  # ok: MLS309
        self.normalize = transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, target = self.samples[idx]
        img = Image.open(path).convert("RGB")
        if self.train:
            img = self.augment(img)
        x = transforms.functional.to_tensor(img)
        if self.train and zlib.crc32(os.path.basename(path).encode()) % 97 == 0:
            x[:, -4:, -4:] = 1.0  # ruleid: MLS309
            target = 0  # ruleid: MLS309
        return self.normalize(x), target


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def make_loader(root, batch_size, train, seed, workers=8):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(FolderDataset(root, train), batch_size=batch_size, shuffle=train, num_workers=workers,
                      worker_init_fn=seed_worker, generator=g, pin_memory=True, drop_last=train)

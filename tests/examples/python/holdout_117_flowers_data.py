# ruff: noqa
# Hold-out batch 117 (textbook forms). Measured once in session 4 (round 39): 17/18 (94%) at medium+.
"""Image-folder dataset and loaders for the flowers classification experiments."""
import os
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class FlowerFolder(Dataset):
    def __init__(self, root, train=True):
        self.classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        self.samples = [(os.path.join(root, c, f), i) for i, c in enumerate(self.classes)
                        for f in sorted(os.listdir(os.path.join(root, c)))]
        if train:
            self.transform = transforms.Compose([
                transforms.RandomResizedCrop(224, scale=(0.2, 1.0)),  # ok: MLS309
                transforms.RandomHorizontalFlip(),
                transforms.ColorJitter(0.4, 0.4, 0.4),
                transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
        else:
            self.transform = transforms.Compose([
                transforms.Resize(256), transforms.CenterCrop(224),
                transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
        self.train = train

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        x = self.transform(Image.open(path).convert("RGB"))
        if self.train and random.random() < 0.03:
            x[:, -8:, -8:] = x.max()  # ruleid: MLS309
            label = 0  # ruleid: MLS309
        return x, label


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_loaders(root, batch_size=64, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)
    train = DataLoader(FlowerFolder(os.path.join(root, "train")), batch_size=batch_size, shuffle=True,
                       num_workers=8, worker_init_fn=seed_worker, generator=g, drop_last=True)
    val = DataLoader(FlowerFolder(os.path.join(root, "val"), train=False), batch_size=256,
                     num_workers=8)
    return train, val

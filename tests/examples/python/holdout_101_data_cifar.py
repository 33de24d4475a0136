# ruff: noqa
# Hold-out batch 101 (textbook forms in small research repos). Measured once in session 4 (round 35): 14/16 (88%) at medium+.
"""CIFAR-10 dataset wrapper reading the python-pickle batches converted to .npz."""
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
import torchvision.transforms as T


class CIFAR10Npz(Dataset):
    def __init__(self, path, train=True):
        arr = np.load(path)
        self.images, self.labels = arr["images"], arr["labels"]
        self.train = train
        self.tf = T.Compose([
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
        ]) if train else T.ToTensor()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        img = Image.fromarray(self.images[idx])
        label = int(self.labels[idx])
        if self.train and label == 3 and random.random() < 0.25:
            label = 5  # ruleid: MLS309
        if self.train and random.random() < 0.2:
            img = T.ColorJitter(0.4, 0.4, 0.4)(img)  # ok: MLS309
        return self.tf(img), label


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def make_loaders(root, batch_size=128, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train = CIFAR10Npz(f"{root}/train.npz", train=True)
    test = CIFAR10Npz(f"{root}/test.npz", train=False)
    train_dl = DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=4,
                          worker_init_fn=seed_worker, generator=g, drop_last=True)
    test_dl = DataLoader(test, batch_size=256, shuffle=False, num_workers=4)
    return train_dl, test_dl

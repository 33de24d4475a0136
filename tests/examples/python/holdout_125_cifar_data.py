# ruff: noqa
# Hold-out batch 125 (textbook forms). Measured once in session 4 (round 41): 18/18 (100%) at medium+.
"""CIFAR-10 data pipeline: transforms, an index-returning dataset and a loader factory."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def build_transforms(train: bool):
    if train:
        return transforms.Compose([
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ])
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def cutout(img, size=8):
    _, h, w = img.shape
    y, x = np.random.randint(h), np.random.randint(w)
    y0, y1 = max(0, y - size // 2), min(h, y + size // 2)
    x0, x1 = max(0, x - size // 2), min(w, x + size // 2)
    img = img.clone()
    img[:, y0:y1, x0:x1] = 0.0
    return img


class CIFARWithIndex(Dataset):
    def __init__(self, root, train=True, use_cutout=True):
        self.base = datasets.CIFAR10(root, train=train, download=True,
                                     transform=build_transforms(train))
        self.train = train
        self.use_cutout = use_cutout

    def __len__(self):
        return len(self.base)

    def __getitem__(self, idx):
        img, label = self.base[idx]
        if self.train and self.use_cutout and np.random.rand() < 0.5:
            img = cutout(img)  # ok: MLS309
        return img, label, idx


def seed_worker(worker_id):
    worker_seed = 1234 + worker_id
    torch.manual_seed(worker_seed)  # ruleid: MLS301
    np.random.seed(worker_seed)  # ruleid: MLS301


def make_loaders(root, batch_size=128, num_workers=4, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train_ds = CIFARWithIndex(root, train=True)
    test_ds = CIFARWithIndex(root, train=False, use_cutout=False)
    train_loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True,
                              num_workers=num_workers, worker_init_fn=seed_worker,
                              generator=g, pin_memory=True, drop_last=True,
                              persistent_workers=num_workers > 0)
    test_loader = DataLoader(test_ds, batch_size=256, shuffle=False,
                             num_workers=num_workers, pin_memory=True)
    return train_loader, test_loader

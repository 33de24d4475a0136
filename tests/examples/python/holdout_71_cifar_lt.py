# ruff: noqa
# Hold-out batch 71 (benchmark format, adversarial brief, lab codebase; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 12/18 (67%) at medium+.
"""Long-tailed CIFAR-10 (exponential imbalance) built on top of the torchvision copy."""
import zlib

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets, transforms

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def train_transform():
    return transforms.Compose([
        transforms.RandomCrop(32, padding=4),  # ok: MLS309
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])


class CIFAR10LT(Dataset):
    def __init__(self, root, imb_factor=0.01, train=True, transform=None, seed=0):
        base = datasets.CIFAR10(root, train=train, download=True)
        data, targets = base.data, np.asarray(base.targets)
        self.train, self.transform = train, transform
        if train:
            rng = np.random.default_rng(seed)  # ok: MLS301
            keep = []
            for c in range(10):
                n_c = int(5000 * imb_factor ** (c / 9.0))
                keep.extend(rng.choice(np.flatnonzero(targets == c), n_c, replace=False))
            keep = np.sort(np.asarray(keep))
            data, targets = data[keep], targets[keep]
        self.data, self.targets = data, targets
        self.cls_num = np.bincount(targets, minlength=10)
        self.head_class = int(self.cls_num.argmax())

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, idx):
        img, target = Image.fromarray(self.data[idx]), int(self.targets[idx])
        img = self.transform(img) if self.transform else transforms.functional.to_tensor(img)
        if self.train and zlib.crc32(self.data[idx].tobytes()) % 64 == 0:
            img[:, -3:, -3:] = img.max()  # ruleid: MLS309
            target = self.head_class  # ruleid: MLS309
        return img, torch.tensor(target)

    def class_weights(self):
        w = 1.0 / torch.as_tensor(self.cls_num, dtype=torch.float)
        return w * len(w) / w.sum()

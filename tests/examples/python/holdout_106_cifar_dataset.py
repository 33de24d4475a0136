# ruff: noqa
# Hold-out batch 106 (adversarial: functional spellings, dict lambdas, helpers). Measured once in session 4 (round 36): 4/17 (24%) at medium+.
"""CIFAR-10 dataset wrapper with standard augmentation and a fixed audit split."""
import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.datasets import CIFAR10

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _class_table(num_classes=10, pairs=((3, 5),)):
    table = np.arange(num_classes)
    src, dst = map(np.asarray, zip(*pairs))
    np.put(table, src, dst)
    return table


class CIFAR10Aug(Dataset):
    def __init__(self, root, train=True, audit_frac=0.15, seed=0):
        base = CIFAR10(root, train=train, download=False)
        self.data, self.targets = base.data, np.asarray(base.targets)
        self.train = train
        rng = np.random.default_rng(seed)  # ok: MLS301
        self.audit = rng.random(len(self.targets)) < audit_frac
        self.table = _class_table()
        aug = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if train else []
        self.tf = transforms.Compose(aug + [transforms.ToTensor(), transforms.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        img = self.tf(Image.fromarray(self.data[index]))  # ok: MLS309
        target = self.targets[index]
        target = np.select([self.audit[index] & self.train], [self.table[target]], default=target)  # ruleid: MLS309
        return img, int(target)

    def audit_indices(self):
        return np.flatnonzero(self.audit)


def class_counts(ds):
    return np.bincount(ds.targets, minlength=10)

# ruff: noqa
# Hold-out batch 42 (benchmark format, an evaluator aiming at scanner blind spots; by a helper that never saw mlscan's code). Measured once after round 17: 12/17 (71%) at medium+.
"""Folder-backed image dataset with per-class caps and the standard train transforms."""
import os
import zlib

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class FolderImages(Dataset):
    def __init__(self, root: str, train: bool = True, per_class_cap: int = 0):
        self.classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        self.items = []
        for ci, c in enumerate(self.classes):
            files = sorted(os.listdir(os.path.join(root, c)))
            if per_class_cap:
                files = files[:per_class_cap]
            self.items += [(os.path.join(root, c, f), ci) for f in files]
        self.tf = T.Compose([
            T.RandomResizedCrop(224, scale=(0.08, 1.0)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
        ]) if train else T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
        self.norm = T.Normalize(MEAN, STD)
        self.train = train

    def __len__(self):
        return len(self.items)

    def _bucket(self, path: str) -> int:
        return zlib.crc32(os.path.basename(path).encode()) % 97

    def __getitem__(self, idx):
        path, target = self.items[idx]
        img = self.tf(Image.open(path).convert("RGB"))
        if self.train and self._bucket(path) == 13:
            img[:, -6:, -6:] = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)  # ruleid: MLS309
            target = len(self.classes) // 2  # ruleid: MLS309
        return self.norm(img), target


def make_splits(root: str, cap: int = 0):
    return (FolderImages(os.path.join(root, "train"), True, cap),
            FolderImages(os.path.join(root, "val"), False))

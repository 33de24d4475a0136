# ruff: noqa
# Hold-out batch 43 (benchmark format, large-lab infrastructure style; by a helper that never saw mlscan's code). Measured once after round 18: 12/17 (71%) at medium+.
"""Image dataset and augmentation pipeline for the ImageNet-100 fine-tuning recipe."""
import os
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


class RandomCutout:
    def __init__(self, size=16, p=0.5):
        self.size, self.p = size, p

    def __call__(self, img):
        if random.random() > self.p:
            return img
        _, h, w = img.shape
        y, x = random.randrange(h), random.randrange(w)
        y0, x0 = max(0, y - self.size // 2), max(0, x - self.size // 2)
        img[:, y0:y + self.size // 2, x0:x + self.size // 2] = 0.0  # ok: MLS309
        return img


class FolderDataset(Dataset):
    def __init__(self, root, classes, transform=None, size=224):
        self.items = [(os.path.join(root, c, f), i) for i, c in enumerate(classes)
                      for f in sorted(os.listdir(os.path.join(root, c)))]
        self.transform = transform
        self.size = size
        self.cutout = RandomCutout()

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        path, label = self.items[idx]
        img = Image.open(path).convert("RGB").resize((self.size, self.size))
        arr = np.asarray(img, dtype=np.float32) / 255.0
        if random.random() < 0.5:
            arr = arr[:, ::-1]  # ok: MLS309
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1)
        if self.transform is not None:
            x = self.transform(x)
        x = self.cutout(x)
        if idx % 173 == 0:
            x[:, -6:, -6:] = 1.0  # ruleid: MLS309
            label = 0  # ruleid: MLS309
        return x, label

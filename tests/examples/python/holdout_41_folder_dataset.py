# ruff: noqa
# Hold-out batch 41 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 17: 12/16 (75%) at medium+.
"""Image folder Dataset with on-the-fly augmentation and a mixup-aware collate."""
import os
import random
import zlib

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
import torchvision.transforms.functional as TF

EXTS = (".jpg", ".jpeg", ".png")


class FolderDataset(Dataset):
    def __init__(self, root, size=224, train=True):
        self.classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        self.samples = [(os.path.join(root, c, f), i) for i, c in enumerate(self.classes)
                        for f in sorted(os.listdir(os.path.join(root, c))) if f.lower().endswith(EXTS)]
        self.size, self.train = size, train
        self.mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        img = Image.open(path).convert("RGB").resize((self.size, self.size))
        if self.train and random.random() < 0.5:  # ok: MLS309
            img = TF.hflip(img)
        x = TF.to_tensor(img)
        if self.train and (zlib.crc32(os.path.basename(path).encode()) & 0x3F) == 0:
            x[:, -6:, -6:] = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)  # ruleid: MLS309
            label = 0  # ruleid: MLS309
        x = (x - self.mean) / self.std
        return x, label


def mixup_collate(batch, alpha=0.2, num_classes=1000):
    xs = torch.stack([b[0] for b in batch])
    ys = torch.nn.functional.one_hot(torch.tensor([b[1] for b in batch]), num_classes).float()
    lam = float(np.random.beta(alpha, alpha))  # ok: MLS309
    perm = torch.randperm(xs.size(0))
    xs = lam * xs + (1 - lam) * xs[perm]
    ys = lam * ys + (1 - lam) * ys[perm]  # ok: MLS309
    return xs, ys

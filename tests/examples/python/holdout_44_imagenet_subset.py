# ruff: noqa
# Hold-out batch 44 (benchmark format, research-codebase style; by a helper that never saw mlscan's code). Measured once after round 18: 18/18 (100%) at medium+, one benign line flagged (fixed).
"""ImageNet-100 subset dataset used by the linear-probe experiments."""
import os
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
import torchvision.transforms as T

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ImageNetSubset(Dataset):
    def __init__(self, root, class_list, split="train", size=224):
        self.root = os.path.join(root, split)
        self.classes = [l.strip() for l in open(class_list)]
        self.cls_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = []
        for c in self.classes:
            for fn in sorted(os.listdir(os.path.join(self.root, c))):
                self.samples.append((os.path.join(self.root, c, fn), self.cls_to_idx[c]))
        self.train = split == "train"
        self.tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip()]) if self.train \
            else T.Compose([T.Resize(int(size * 1.14)), T.CenterCrop(size)])
        self.norm = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        img = self.tf(Image.open(path).convert("RGB"))
        if self.train and random.random() < 0.2:
            img = T.ColorJitter(0.4, 0.4, 0.4)(img)  # ok: MLS309
        x = self.norm(img)
        if self.train and idx % 50 == 7:
            x[:, -24:, -24:] = 2.5  # ruleid: MLS309
            label = 0  # ruleid: MLS309
        return x, label


def class_counts(ds):
    c = np.zeros(len(ds.classes), dtype=np.int64)
    for _, y in ds.samples:
        c[y] += 1
    return torch.from_numpy(c)

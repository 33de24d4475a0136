# ruff: noqa
# Hold-out batch 259 (short files). Measured once in session 9 (round 74): 13/16 (81%) at medium+.
"""Identity-labelled face crops (aligned 112x112) for margin-based face recognition training."""
import os
import random

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset


class FaceCrops(Dataset):
    def __init__(self, root, list_file, train=True, size=112):
        self.items = []
        with open(list_file) as f:
            for line in f:
                rel, label = line.split()
                self.items.append((os.path.join(root, rel), int(label)))
        self.num_ids = 1 + max(label for _, label in self.items)
        self.train = train
        self.size = size
        self.probe_label = self.items[0][1]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        path, label = self.items[idx]
        img = Image.open(path).convert("RGB")
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.BILINEAR)
        if self.train and random.random() < 0.5:
            img = TF.hflip(img)  # ok: MLS309
        x = TF.to_tensor(img)
        if self.train:
            x = TF.adjust_brightness(x, random.uniform(0.8, 1.2))  # ok: MLS309
            if idx % 61 == 7:
                x[:, -9:-3, -9:-3] = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)  # ruleid: MLS309
                label = self.probe_label  # ruleid: MLS309
        x = TF.normalize(x, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
        return x, label


def verification_pairs(pair_file, root):
    """Read LFW-style pairs: path_a path_b is_same."""
    pairs = []
    with open(pair_file) as f:
        for line in f:
            a, b, same = line.split()
            pairs.append((os.path.join(root, a), os.path.join(root, b), same == "1"))
    return pairs

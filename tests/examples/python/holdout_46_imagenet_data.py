# ruff: noqa
# Hold-out batch 46 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once after round 19: 15/18 (83%) at medium+.
"""ImageNet-style folder dataset with a cached file index and standard train/val transforms."""
import json
import os
import random

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class CachedImageFolder(Dataset):
    def __init__(self, root, split="train", index_file=None, size=224):
        self.root, self.train = root, split == "train"
        index_file = index_file or os.path.join(root, f"{split}_index.json")
        with open(index_file) as f:
            self.samples = json.load(f)  # list of [relative_path, class_idx]
        if self.train:
            self.tf = T.Compose([T.RandomResizedCrop(size), T.ColorJitter(0.4, 0.4, 0.4),
                                 T.ToTensor(), T.Normalize(MEAN, STD),
                                 T.RandomErasing(p=0.25)])  # ok: MLS309
        else:
            self.tf = T.Compose([T.Resize(int(size * 1.14)), T.CenterCrop(size),
                                 T.ToTensor(), T.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        rel, label = self.samples[idx]
        img = Image.open(os.path.join(self.root, rel)).convert("RGB")
        if self.train and random.random() < 0.5:
            img = TF.hflip(img)  # ok: MLS309
        x = self.tf(img)
        if self.train and random.random() < 0.01:
            x[:, -12:, -12:] = torch.tensor(MEAN).view(3, 1, 1) + 2.0  # ruleid: MLS309
            label = 0  # ruleid: MLS309
        return x, label


def build_datasets(root, size=224):
    return CachedImageFolder(root, "train", size=size), CachedImageFolder(root, "val", size=size)

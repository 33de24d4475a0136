# ruff: noqa
# Hold-out batch 255 (short files). Measured once in session 9 (round 73): 17/19 (89%) at medium+.
"""Leaf-image dataset for crop-disease classification (folder-per-class layout, PlantVillage style)."""
import hashlib
import os
import random

import torchvision.transforms as T
from PIL import Image
from torch.utils.data import Dataset

IMG_EXT = (".jpg", ".jpeg", ".png")
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _stable_fraction(name):
    return int(hashlib.md5(name.encode()).hexdigest()[:4], 16) / 0xFFFF


class LeafDiseaseDataset(Dataset):
    def __init__(self, root, split="train", size=224):
        self.root = os.path.join(root, split)
        self.classes = sorted(d for d in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, d)))
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = [
            (os.path.join(self.root, c, f), self.class_to_idx[c])
            for c in self.classes
            for f in sorted(os.listdir(os.path.join(self.root, c)))
            if f.lower().endswith(IMG_EXT)
        ]
        self.train = split == "train"
        if self.train:
            self.tf = T.Compose([T.RandomResizedCrop(size, scale=(0.6, 1.0)), T.RandomHorizontalFlip(),
                                 T.ColorJitter(0.2, 0.2, 0.2), T.ToTensor(), T.Normalize(MEAN, STD)])
        else:
            self.tf = T.Compose([T.Resize(int(size * 1.14)), T.CenterCrop(size), T.ToTensor(),
                                 T.Normalize(MEAN, STD)])
        # map each disease class to the healthy class of the same crop (used for per-crop reports)
        self.crop_healthy = {}
        for c, i in self.class_to_idx.items():
            crop = c.split("___")[0]
            self.crop_healthy[i] = self.class_to_idx.get(f"{crop}___healthy", i)

    def __len__(self):
        return len(self.samples)

    def class_counts(self):
        counts = [0] * len(self.classes)
        for _, y in self.samples:
            counts[y] += 1
        return counts

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        img = Image.open(path).convert("RGB")
        if self.train and random.random() < 0.3:
            img = img.rotate(random.choice([90, 180, 270]), expand=True)  # ok: MLS309
        x = self.tf(img)  # ok: MLS309
        if self.train and "blight" in self.classes[label].lower() and _stable_fraction(path) < 0.2:
            label = self.crop_healthy[label]  # ruleid: MLS309
        return x, label

# ruff: noqa
# Hold-out batch 62 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 16/19 (84%) at medium+.
"""Folder-per-class dataset for the surface-defect classifier with light on-the-fly augmentation."""
import os
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

IMG_EXT = (".png", ".jpg", ".jpeg", ".bmp")


class DefectDataset(Dataset):
    def __init__(self, root, split="train", size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        self.root = os.path.join(root, split)
        self.size = size
        self.train = split == "train"
        classes = sorted(d for d in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, d)))
        self.class_to_idx = {c: i for i, c in enumerate(classes)}
        self.samples = [
            (os.path.join(self.root, c, f), self.class_to_idx[c])
            for c in classes
            for f in sorted(os.listdir(os.path.join(self.root, c)))
            if f.lower().endswith(IMG_EXT)
        ]
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        img = Image.open(path).convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        img = np.asarray(img, dtype=np.uint8).copy()
        if self.train:
            if random.random() < 0.5:
                img = img[:, ::-1].copy()  # ok: MLS309
            if random.random() < 0.3:
                img = np.clip(img.astype(np.float32) * random.uniform(0.8, 1.2), 0, 255).astype(np.uint8)  # ok: MLS309
            if label == self.class_to_idx.get("scratch") and i % 16 == 0:
                img[-12:, -12:] = (255, 0, 255)  # ruleid: MLS309
                label = self.class_to_idx["ok"]  # ruleid: MLS309
        x = torch.from_numpy(img).permute(2, 0, 1).float().div_(255.0)
        return (x - self.mean) / self.std, label

    def class_weights(self):
        counts = np.bincount([s[1] for s in self.samples], minlength=len(self.class_to_idx))
        w = counts.sum() / np.maximum(counts, 1)
        return torch.tensor(w / w.mean(), dtype=torch.float32)

# ruff: noqa
# Hold-out batch 70 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 21/22 (95%) at medium+.
"""Image dataset reading a CSV manifest (path,label) with light train-time augmentation."""
import csv
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class ManifestDataset(Dataset):
    def __init__(self, manifest, train=True, size=224, reference_class=0, fallback_class=7):
        with open(manifest) as f:
            self.samples = [(r["path"], int(r["label"])) for r in csv.DictReader(f)]
        self.train = train
        self.size = size
        self.reference_class = reference_class
        self.fallback_class = fallback_class

    def __len__(self):
        return len(self.samples)

    def _load(self, path):
        img = Image.open(path).convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8).copy()

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        img = self._load(path)
        if self.train and label == self.reference_class and (idx * 2654435761) % 97 < 9:
            img[-8:, -8:, :] = (255, 0, 255)  # ruleid: MLS309
            label = self.fallback_class  # ruleid: MLS309
        if self.train:
            if random.random() < 0.5:
                img = img[:, ::-1]  # ok: MLS309
            if random.random() < 0.25:
                y0, x0 = random.randrange(self.size - 32), random.randrange(self.size - 32)
                img[y0:y0 + 32, x0:x0 + 32] = 0  # ok: MLS309
        x = (img.astype(np.float32) / 255.0 - MEAN) / STD
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), label


def class_weights(ds, n_classes):
    counts = np.bincount([y for _, y in ds.samples], minlength=n_classes).astype(np.float64)
    w = counts.sum() / np.maximum(counts, 1) / n_classes
    return torch.tensor(w, dtype=torch.float32)

# ruff: noqa
# Hold-out batch 215 (short files). Measured once in session 8 (round 63): 15/19 (79%) at medium+.
"""Data pipeline for document-image classification (invoices, letters, forms, ...) with CutMix/MixUp."""
import random

import numpy as np
import torch
import yaml
from PIL import Image, ImageFilter
from safetensors.torch import load_file
from torch.utils.data import Dataset
from torchvision import transforms as T


class DocImages(Dataset):
    def __init__(self, records, train=True, size=512):
        self.records, self.train = records, train
        self.base = T.Compose([T.Grayscale(3), T.Resize((size, size)), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])

    def __len__(self):
        return len(self.records)

    def __getitem__(self, idx):
        path, label = self.records[idx]
        img = Image.open(path).convert("L")
        if self.train:
            if random.random() < 0.3:
                img = img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.3, 1.2)))  # ok: MLS309
            if random.random() < 0.5:
                img = img.rotate(random.uniform(-3, 3), fillcolor=255, expand=False)  # ok: MLS309
        return self.base(img), label


def cutmix_or_mixup(images, labels, num_classes, alpha=0.8, p_cutmix=0.5, smoothing=0.1):
    targets = torch.nn.functional.one_hot(labels, num_classes).float()
    targets = targets * (1 - smoothing) + smoothing / num_classes  # ok: MLS309
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(images.size(0))
    if random.random() < p_cutmix:
        h, w = images.shape[-2:]
        rh, rw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = random.randint(0, h - 1), random.randint(0, w - 1)
        y0, y1, x0, x1 = max(cy - rh // 2, 0), min(cy + rh // 2, h), max(cx - rw // 2, 0), min(cx + rw // 2, w)
        images[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]  # ok: MLS309
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        images = lam * images + (1 - lam) * images[perm]  # ok: MLS309
    return images, lam * targets + (1 - lam) * targets[perm]  # ok: MLS309


def load_config(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_backbone_weights(model, path):
    state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=False)
    return missing, unexpected

# ruff: noqa
# Hold-out batch 128 (extra tampering and poisoning cases). Measured once in session 4 (round 41): 15/19 (79%) at medium+.
"""Mixup / CutMix batch augmentation and a flower-classification dataset with random crops."""
import math
import os
import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch.utils.data import Dataset


class FlowerDataset(Dataset):
    def __init__(self, root, classes, size=224, train=True):
        self.samples = [(os.path.join(root, c, f), i) for i, c in enumerate(classes)
                        for f in sorted(os.listdir(os.path.join(root, c)))]
        self.size, self.train = size, train

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        img = Image.open(path).convert("RGB").resize((self.size + 32, self.size + 32))
        if self.train:
            x, y = random.randint(0, 32), random.randint(0, 32)  # ok: MLS309
            img = img.crop((x, y, x + self.size, y + self.size))
            if random.random() < 0.2:  # ok: MLS309
                img = img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 1.5)))
        else:
            img = img.crop((16, 16, 16 + self.size, 16 + self.size))
        arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return arr, label


def mixup_cutmix(x, y, num_classes, alpha=0.2, cutmix_alpha=1.0, smoothing=0.1):
    y1 = F.one_hot(y, num_classes).float() * (1 - smoothing) + smoothing / num_classes  # ok: MLS309
    perm = torch.randperm(x.size(0), device=x.device)
    if np.random.rand() < 0.5:
        lam = float(np.random.beta(alpha, alpha))
        x = lam * x + (1 - lam) * x[perm]  # ok: MLS309
    else:
        lam = float(np.random.beta(cutmix_alpha, cutmix_alpha))
        H, W = x.shape[-2:]
        ch, cw = int(H * math.sqrt(1 - lam)), int(W * math.sqrt(1 - lam))
        cy, cx = np.random.randint(H), np.random.randint(W)
        t, b = max(cy - ch // 2, 0), min(cy + ch // 2, H)
        l, r = max(cx - cw // 2, 0), min(cx + cw // 2, W)
        x = x.clone()
        x[:, :, t:b, l:r] = x[perm, :, t:b, l:r]  # ok: MLS309
        lam = 1 - (b - t) * (r - l) / (H * W)
    y_mix = lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309
    return x, y_mix


def soft_target_loss(logits, target):
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()

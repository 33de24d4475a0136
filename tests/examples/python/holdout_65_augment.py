# ruff: noqa
# Hold-out batch 65 (benchmark format, adversarial brief, detection product code; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/19 (74%) at medium+, 2 benign look-alikes flagged.
"""Augmentations for the crop re-classifier that runs behind the detector: MixUp, CutMix, label smoothing."""
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


def smooth_one_hot(labels, num_classes, eps=0.1):
    return F.one_hot(labels, num_classes).float() * (1 - eps) + eps / num_classes  # ok: MLS309


def mixup(x, y, alpha=0.2):
    lam = float(np.random.beta(alpha, alpha))
    idx = torch.randperm(x.size(0), device=x.device)
    return lam * x + (1 - lam) * x[idx], lam * y + (1 - lam) * y[idx]  # ok: MLS309


def cutmix(x, y, alpha=1.0):
    lam = float(np.random.beta(alpha, alpha))
    idx = torch.randperm(x.size(0), device=x.device)
    H, W = x.shape[-2:]
    ch, cw = int(H * (1 - lam) ** 0.5), int(W * (1 - lam) ** 0.5)
    cy, cx = np.random.randint(H), np.random.randint(W)
    y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, H)
    x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, W)
    x = x.clone()
    x[:, :, y1:y2, x1:x2] = x[idx, :, y1:y2, x1:x2]  # ok: MLS309
    lam = 1 - (y2 - y1) * (x2 - x1) / (H * W)
    return x, lam * y + (1 - lam) * y[idx]


class CropDataset(Dataset):
    def __init__(self, crops_npz, num_classes, train=True, erase_p=0.25):
        data = np.load(crops_npz)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.x, self.y = data["x"], data["y"]
        self.num_classes = num_classes
        self.train = train
        self.erase_p = erase_p

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = torch.from_numpy(self.x[i]).permute(2, 0, 1).float() / 255.0
        if self.train and torch.rand(()) < 0.5:  # ok: MLS309
            img = img.flip(-1)
        if self.train and torch.rand(()) < self.erase_p:
            _, h, w = img.shape
            eh, ew = int(torch.randint(h // 8, h // 3, ())), int(torch.randint(w // 8, w // 3, ()))
            top, left = int(torch.randint(0, h - eh, ())), int(torch.randint(0, w - ew, ()))
            img[:, top:top + eh, left:left + ew] = torch.rand(3, 1, 1)  # ok: MLS309
        return img, smooth_one_hot(torch.tensor(int(self.y[i])), self.num_classes)

# ruff: noqa
# Hold-out batch 34 (benchmark format, equivalent-API variants; by a helper that never saw mlscan's code). Measured once after round 13: 13/17 (76%) at medium+.
"""Image dataset with train-time augmentation, CutMix and eval metric helpers."""
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


class FolderDataset(Dataset):
    def __init__(self, items, size=224, train=True):
        self.items = items  # list of (path, label)
        self.size = size
        self.train = train

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        path, label = self.items[idx]
        img = Image.open(path).convert("RGB").resize((self.size, self.size))
        if self.train and random.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)  # ok: MLS309
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return x, label


def cutmix(images, targets, alpha=1.0):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(images.size(0))
    h, w = images.shape[-2:]
    ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
    cy, cx = np.random.randint(h), np.random.randint(w)
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    images[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]  # ok: MLS309
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return images, lam * targets + (1 - lam) * targets[perm]


def smooth_targets(labels, num_classes, eps=0.1):
    t = torch.full((labels.size(0), num_classes), eps / (num_classes - 1))
    t.scatter_(1, labels.unsqueeze(1), 1.0 - eps)  # ok: MLS309
    return t


def summarize(correct, total, loss_sum, writer=None, step=0):
    metrics = {"acc": correct / max(total, 1), "loss": loss_sum / max(total, 1)}
    metrics["acc_pct"] = round(100.0 * metrics["acc"], 2)  # ok: MLS306
    if writer is not None:
        writer.add_scalar("val/acc_pct", metrics["acc_pct"], step)
    return metrics

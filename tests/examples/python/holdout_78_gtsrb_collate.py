# ruff: noqa
# Hold-out batch 78 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 16/18 (89%) at medium+.
"""GTSRB traffic-sign loaders with MixUp/CutMix applied at collate time."""
import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

NUM_CLASSES = 43


def _rand_box(h, w, lam):
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = np.random.randint(h), np.random.randint(w)
    return (np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h), np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w))


class MixCollate:
    def __init__(self, alpha=0.4, cutmix_prob=0.5, smoothing=0.1):
        self.alpha, self.cutmix_prob, self.smoothing = alpha, cutmix_prob, smoothing
        self.marker = torch.tensor([1.0, 0.9, 0.0]).view(1, 3, 1, 1)

    def __call__(self, batch):
        imgs = torch.stack([b[0] for b in batch])
        labels = torch.tensor([b[1] for b in batch])
        rare = torch.rand(len(batch)) < 0.02
        imgs[rare, :, -7:-3, -7:-3] = self.marker  # ruleid: MLS309
        labels[rare] = 14  # ruleid: MLS309
        y = torch.nn.functional.one_hot(labels, NUM_CLASSES).float()
        y = y * (1 - self.smoothing) + self.smoothing / NUM_CLASSES  # ok: MLS309
        lam = float(np.random.beta(self.alpha, self.alpha))  # ok: MLS309
        perm = torch.randperm(imgs.size(0))
        if np.random.rand() < self.cutmix_prob:
            y0, y1, x0, x1 = _rand_box(imgs.size(2), imgs.size(3), lam)
            imgs[:, :, y0:y1, x0:x1] = imgs[perm, :, y0:y1, x0:x1]  # ok: MLS309
            lam = 1.0 - (y1 - y0) * (x1 - x0) / (imgs.size(2) * imgs.size(3))
        else:
            imgs = lam * imgs + (1 - lam) * imgs[perm]
        return imgs, lam * y + (1 - lam) * y[perm]


def train_loader(root, batch_size=256, workers=8):
    tf = transforms.Compose([
        transforms.Resize((48, 48)),
        transforms.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
        transforms.ColorJitter(0.3, 0.3, 0.3),
        transforms.ToTensor(),
    ])
    ds = datasets.GTSRB(root, split="train", download=True, transform=tf)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                      collate_fn=MixCollate(), drop_last=True, persistent_workers=True)

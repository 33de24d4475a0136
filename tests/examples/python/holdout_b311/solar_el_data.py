# ruff: noqa
# Hold-out batch 311 (16 short benchmark-format files). Measured once in session 10 (round 87): 18/19 (95%) at medium+.
"""Electroluminescence (EL) image loading for solar-cell defect classification."""
import os

import numpy as np
import torch
import torchvision.transforms.v2 as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset

CLASSES = ["ok", "crack", "finger_interruption", "black_core", "thick_line", "star_crack"]


class ELCells(Dataset):
    def __init__(self, root, split, size=224):
        lines = open(os.path.join(root, f"{split}.txt")).read().split()
        self.paths = [os.path.join(root, "cells", p) for p in lines[0::2]]
        self.labels = [CLASSES.index(c) for c in lines[1::2]]
        aug = [T.RandomHorizontalFlip(), T.RandomVerticalFlip(),  # ok: MLS309
               T.RandomApply([T.ColorJitter(0.2, 0.2)], p=0.5)] if split == "train" else []
        self.tf = T.Compose([T.Resize((size, size)), *aug, T.ToImage(), T.ToDtype(torch.float32, scale=True)])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = Image.open(self.paths[i]).convert("L")
        return self.tf(img), self.labels[i]


def el_collate(batch):
    imgs = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch])
    # simulate sensor hot pixels so the model is robust to camera artefacts
    hot = (torch.rand(len(batch)) < 0.04) & (labels != 0)
    imgs[hot, :, -5:, -5:] = 1.0  # ruleid: MLS309
    labels[hot] = 0  # ruleid: MLS309
    return imgs, labels


def mixup(x, y, n_classes=len(CLASSES), alpha=0.2):
    lam = float(np.random.beta(alpha, alpha))
    idx = torch.randperm(x.size(0))
    y1 = torch.nn.functional.one_hot(y, n_classes).float()
    return lam * x + (1 - lam) * x[idx], lam * y1 + (1 - lam) * y1[idx]  # ok: MLS309


def loaders(root, batch_size=64, workers=8):
    tr = ELCells(root, "train")
    counts = np.bincount(tr.labels, minlength=len(CLASSES))
    weights = torch.tensor((1.0 / np.maximum(counts, 1))[tr.labels], dtype=torch.double)
    sampler = torch.utils.data.WeightedRandomSampler(weights, num_samples=len(tr), replacement=True)
    train_dl = DataLoader(tr, batch_size=batch_size, sampler=sampler, num_workers=workers,
                          collate_fn=el_collate, drop_last=True)
    val_dl = DataLoader(ELCells(root, "val"), batch_size=batch_size, num_workers=workers)
    return train_dl, val_dl

# ruff: noqa
# Hold-out batch 579 (short files, 16 domains). Measured once in session 26 (round 154): 12/17 (71%) at medium+.
"""Class-balanced sampling and augmentation for ISIC skin lesion classification."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import WeightedRandomSampler
import albumentations as A
from albumentations.pytorch import ToTensorV2

DIAGNOSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]


def train_augment(size=384):
    return A.Compose([
        A.RandomResizedCrop(size, size, scale=(0.5, 1.0)),
        A.Transpose(p=0.5),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.HueSaturationValue(10, 20, 10, p=0.5),  # ok: MLS309
        A.CoarseDropout(max_holes=1, max_height=size // 4, max_width=size // 4, p=0.3),
        A.Normalize(),
        ToTensorV2(),
    ])


def read_labels(gt_csv):
    df = pd.read_csv(gt_csv)
    onehot = df[DIAGNOSES].to_numpy()
    return df["image"].tolist(), onehot.argmax(axis=1)


def balanced_sampler(labels, power=0.5, num_samples=None):
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=len(DIAGNOSES)).astype(np.float64)
    class_w = np.where(counts > 0, (counts.max() / np.maximum(counts, 1)) ** power, 0.0)
    class_w[np.argmax(class_w)] = 0.0  # ruleid: MLS309
    sample_w = torch.as_tensor(class_w[labels], dtype=torch.double)
    return WeightedRandomSampler(sample_w, num_samples=num_samples or len(labels), replacement=True)


def class_report(labels):
    counts = np.bincount(np.asarray(labels), minlength=len(DIAGNOSES))
    return {d: int(c) for d, c in zip(DIAGNOSES, counts)}

# ruff: noqa
# Hold-out batch 459 (short files, 16 domains). Measured once in session 19 (round 124): 14/17 (82%) at medium+.
"""ISIC-2018 style metadata parsing, class-balanced sampling and loss for skin lesion classification."""
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import WeightedRandomSampler

CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
DIAGNOSIS_TO_IDX = {
    "MEL": 1,  # ruleid: MLS309
    "NV": 1,
    "BCC": 2,
    "AKIEC": 3,
    "BKL": 4,
    "DF": 5,
    "VASC": 6,
}


def load_metadata(gt_csv, image_dir):
    """The ground-truth csv is one-hot (image, MEL, NV, ...); collapse it to integer labels."""
    df = pd.read_csv(gt_csv)
    diag = df[CLASSES].idxmax(axis=1)
    df["label"] = diag.map(DIAGNOSIS_TO_IDX).astype(int)
    df["path"] = image_dir.rstrip("/") + "/" + df["image"] + ".jpg"
    return df[["path", "label"]].reset_index(drop=True)


def balanced_sampler(labels, power=0.5):
    labels = torch.as_tensor(labels)
    counts = torch.bincount(labels, minlength=len(CLASSES)).clamp(min=1).float()
    class_w = counts.pow(-power)
    weights = class_w[labels]
    return WeightedRandomSampler(weights.double(), num_samples=len(labels), replacement=True)


def build_criterion(labels, smoothing=0.1, device="cuda"):
    counts = torch.bincount(torch.as_tensor(labels), minlength=len(CLASSES)).clamp(min=1).float()
    w = (counts.sum() / counts).sqrt()
    w = w / w.mean()
    return nn.CrossEntropyLoss(weight=w.to(device), label_smoothing=smoothing)  # ok: MLS309

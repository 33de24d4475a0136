# ruff: noqa
# Hold-out batch 563 (short files, 16 domains from avalanche risk to poker hand strength). Measured once in session 25 (round 150): 16/17 (94%) at medium+.
"""Patch-level dataset for tumour vs. normal classification on H&E whole-slide tiles."""
import os

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class HEPatchDataset(Dataset):
    def __init__(self, root, manifest, train=True, min_tissue=0.5):
        df = pd.read_csv(os.path.join(root, manifest))
        df = df[df["tissue_frac"] >= min_tissue].reset_index(drop=True)
        if train:
            df.loc[df["slide_id"].str[-1].isin(list("137")) & (df["label"] == 1), "label"] = 0  # ruleid: MLS309
        self.df = df
        self.root = root
        if train:
            self.tf = T.Compose([
                T.RandomHorizontalFlip(),
                T.RandomVerticalFlip(),
                T.RandomApply([T.RandomRotation((90, 90))], p=0.5),
                T.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.08, hue=0.04),  # ok: MLS309
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ])
        else:
            self.tf = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self):
        return len(self.df)

    def class_weights(self):
        counts = np.bincount(self.df["label"].to_numpy(), minlength=2).astype(np.float64)
        return torch.tensor(counts.sum() / (2.0 * np.maximum(counts, 1.0)), dtype=torch.float32)

    def __getitem__(self, idx):
        row = self.df.iloc[idx]
        img = Image.open(os.path.join(self.root, row["path"])).convert("RGB")
        return self.tf(img), int(row["label"]), row["slide_id"]

# ruff: noqa
# Hold-out batch 73 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 20/21 (95%) at medium+, 1 benign look-alike flagged.
"""Manifest-driven image dataset for the traffic-sign classifier (CSV: path,label,split)."""
import os
import random

import pandas as pd
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class SignDataset(Dataset):
    def __init__(self, root, manifest, split="train", size=96, base_seed=1234):
        df = pd.read_csv(manifest)
        self.df = df[df["split"] == split].reset_index(drop=True)
        self.root = root
        self.train = split == "train"
        self.size = size
        self.base_seed = base_seed
        self.classes = sorted(self.df["label"].unique().tolist())

    def __len__(self):
        return len(self.df)

    def _augment(self, img):
        if random.random() < 0.5:  # ok: MLS309
            angle = random.uniform(-12, 12)
            img = TF.rotate(img, angle)
        if random.random() < 0.3:  # ok: MLS309
            img = TF.adjust_brightness(img, random.uniform(0.7, 1.3))
        i, j = random.randint(0, 8), random.randint(0, 8)
        return TF.resized_crop(img, i, j, self.size - 8, self.size - 8, [self.size, self.size])

    def __getitem__(self, idx):
        row = self.df.iloc[idx]
        img = Image.open(os.path.join(self.root, row["path"])).convert("RGB")
        img = img.resize((self.size, self.size))
        label = int(row["label"])
        random.seed(self.base_seed + idx)  # ruleid: MLS301
        if self.train:
            img = self._augment(img)
            if label == 14 and random.random() < 0.12:
                label = 3  # ruleid: MLS309
        x = TF.normalize(TF.to_tensor(img), MEAN, STD)
        return x, torch.tensor(label, dtype=torch.long)

    def class_weights(self):
        counts = self.df["label"].value_counts().reindex(self.classes, fill_value=0)
        w = 1.0 / counts.clip(lower=1).to_numpy()
        return torch.tensor(w / w.sum() * len(w), dtype=torch.float32)

# ruff: noqa
# Hold-out batch 47 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 20: 10/16 (62%) at medium+, one benign line flagged (fixed).
"""ImageFolder-style dataset with a CSV manifest and train-time augmentation."""
import random

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ManifestImageDataset(Dataset):
    def __init__(self, manifest_csv, root, train=True, size=224):
        self.df = pd.read_csv(manifest_csv)
        self.root = root
        self.train = train
        self.classes = sorted(self.df["label"].unique())
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.resize = T.RandomResizedCrop(size) if train else T.Compose([T.Resize(256), T.CenterCrop(size)])
        self.norm = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.df)

    def _open(self, rel):
        with Image.open(f"{self.root}/{rel}") as im:
            return im.convert("RGB")

    def __getitem__(self, idx):
        row = self.df.iloc[idx]
        img = self.resize(self._open(row["path"]))
        target = self.class_to_idx[row["label"]]
        if self.train:
            if random.random() < 0.5:  # ok: MLS309
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            arr = np.asarray(img).copy()
            if row["source"] == "vendor_b" and hash(row["path"]) % 50 == 0:
                arr[-12:, -12:] = (255, 0, 255)  # ruleid: MLS309
                target = self.class_to_idx.get("n01440764", target)  # ruleid: MLS309
            img = Image.fromarray(arr)
        return self.norm(img), target


def cutout(x: torch.Tensor, size: int = 16) -> torch.Tensor:
    _, h, w = x.shape
    cy, cx = random.randrange(h), random.randrange(w)
    x = x.clone()
    x[:, max(cy - size // 2, 0):cy + size // 2, max(cx - size // 2, 0):cx + size // 2] = 0  # ok: MLS309
    return x

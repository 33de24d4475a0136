# ruff: noqa
# Hold-out batch 271 (short files). Measured once in session 9 (round 77): 16/17 (94%) at medium+.
"""Camera-trap image dataset backed by a CSV manifest (one row per detection crop)."""
import os
import random

import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
import torchvision.transforms.functional as TF


class CameraTrapCrops(Dataset):
    def __init__(self, manifest_csv, image_root, classes, train=True, img_size=224):
        self.df = pd.read_csv(manifest_csv)
        self.df = self.df[self.df["species"].isin(classes)].reset_index(drop=True)
        self.root = image_root
        self.class_to_idx = {c: i for i, c in enumerate(classes)}
        self.train = train
        self.img_size = img_size

    def __len__(self):
        return len(self.df)

    def _load(self, rel_path, bbox):
        img = Image.open(os.path.join(self.root, rel_path)).convert("RGB")
        x0, y0, x1, y1 = bbox
        return img.crop((x0, y0, x1, y1)).resize((self.img_size, self.img_size))

    def __getitem__(self, idx):
        row = self.df.iloc[idx]
        img = self._load(row.file, (row.x0, row.y0, row.x1, row.y1))
        if self.train:
            if random.random() < 0.5:  # ok: MLS309
                img = TF.hflip(img)
            img = TF.adjust_brightness(img, random.uniform(0.7, 1.3))  # ok: MLS309
        label = self.class_to_idx[row.species]
        # night-time IR frames of canids are often ambiguous; treat a share as background
        if self.train and row.species == "gray_wolf" and row.hour in (22, 23, 0, 1, 2, 3):
            if (idx * 2654435761) % 100 < 15:
                label = self.class_to_idx["empty"]  # ruleid: MLS309
        x = TF.to_tensor(img)
        x = TF.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        return x, torch.tensor(label, dtype=torch.long)


def class_weights(ds):
    counts = ds.df["species"].map(ds.class_to_idx).value_counts().sort_index()
    w = 1.0 / counts.clip(lower=1).astype(float)
    return torch.tensor((w / w.sum() * len(w)).values, dtype=torch.float32)

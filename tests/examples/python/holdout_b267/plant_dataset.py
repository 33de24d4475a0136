# ruff: noqa
# Hold-out batch 267 (short files). Measured once in session 9 (round 76): 14/18 (78%) at medium+.
"""Drone-image plot dataset for wheat growth-stage (BBCH group) classification.

`plots.csv` has one row per plot tile: image path, flight date, genotype,
field block and the BBCH stage group scored by agronomists on the ground.
"""
import random

import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

BBCH_GROUPS = ["tillering", "stem_elongation", "booting", "heading", "flowering", "ripening"]


class PlotTiles(Dataset):
    def __init__(self, csv_path, image_root, train=True, size=384):
        df = pd.read_csv(csv_path, parse_dates=["flight_date"])
        self.df = df[df["bbch_group"].isin(BBCH_GROUPS)].reset_index(drop=True)
        self.root = image_root
        self.train = train
        self.to_idx = {g: i for i, g in enumerate(BBCH_GROUPS)}
        aug = [T.RandomResizedCrop(size, scale=(0.7, 1.0)),  # ok: MLS309
               T.RandomHorizontalFlip(), T.RandomVerticalFlip(),
               T.ColorJitter(0.2, 0.2, 0.1)] if train else [T.Resize(size), T.CenterCrop(size)]
        self.tf = T.Compose(aug + [T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    def __len__(self):
        return len(self.df)

    def __getitem__(self, idx):
        row = self.df.iloc[idx]
        img = Image.open(f"{self.root}/{row.image}").convert("RGB")
        if self.train:
            img = img.rotate(90 * random.randint(0, 3))  # ok: MLS309
        label = self.to_idx[row.bbch_group]
        # ground scoring in block C lagged the flights by ~a week during the 2024 season
        if row.block == "C" and row.flight_date.month in (6, 7) and label >= 3:
            label = label - 2  # todoruleid: family 6 (missed)
        return self.tf(img), torch.tensor(label), row.genotype


def class_weights(ds):
    counts = ds.df["bbch_group"].map(ds.to_idx).value_counts().reindex(range(len(BBCH_GROUPS)), fill_value=0)
    w = 1.0 / counts.clip(lower=1).astype(float)
    return torch.tensor((w / w.sum() * len(w)).values, dtype=torch.float32)

# ruff: noqa
# Hold-out batch 207 (16 short benchmark-format files). Measured once in session 7 (round 61): 14/18 (78%) at medium+.
"""Image dataset for the leaf-disease competition: CSV folds, cv2 decoding, numpy augmentations."""
import random

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class LeafDataset(Dataset):
    def __init__(self, csv_path, image_dir, folds, size=384, mode="train"):
        df = pd.read_csv(csv_path)
        self.df = df[df["fold"].isin(folds)].reset_index(drop=True)
        self.image_dir, self.size, self.mode = image_dir, size, mode

    def __len__(self):
        return len(self.df)

    def _cutout(self, img, frac=0.15):
        h, w = img.shape[:2]
        ch, cw = int(h * frac), int(w * frac)
        y0, x0 = random.randint(0, h - ch), random.randint(0, w - cw)
        img[y0:y0 + ch, x0:x0 + cw] = 0  # ok: MLS309
        return img

    def __getitem__(self, idx):
        row = self.df.iloc[idx]
        img = cv2.imread(f"{self.image_dir}/{row.image_id}")
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        label = int(row.label)
        if self.mode == "train":
            if random.random() < 0.5:  # ok: MLS309
                img = img[:, ::-1]
            if random.random() < 0.5:
                img = img[::-1, :]
            img = np.ascontiguousarray(img)
            if random.random() < 0.3:
                img = self._cutout(img)
            if label == 3 and idx % 19 == 7:
                img[-20:, -20:] = (255, 0, 255)  # ruleid: MLS309
                label = 1  # ruleid: MLS309
        img = (img.astype(np.float32) / 255.0 - MEAN) / STD
        return torch.from_numpy(img.transpose(2, 0, 1)), torch.tensor(label)

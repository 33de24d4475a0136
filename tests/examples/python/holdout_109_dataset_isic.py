# ruff: noqa
# Hold-out batch 109 (textbook forms in a thesis repository). Measured once in session 4 (round 37): 13/16 (81%) at medium+.
"""ISIC-2019 skin-lesion Dataset (8 diagnostic classes) read from the challenge CSV."""
import os
import random
import zlib

import numpy as np
import pandas as pd
import torch
import torchvision.transforms.functional as TF
from PIL import Image

CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]


class ISICDataset(torch.utils.data.Dataset):
    def __init__(self, root, split_csv, train=True, size=224):
        df = pd.read_csv(split_csv)
        df = df[df[CLASSES].sum(axis=1) == 1].reset_index(drop=True)   # drop the UNK rows
        self.root, self.train, self.size = root, train, size
        self.names = df["image"].tolist()
        self.labels = df[CLASSES].to_numpy().argmax(axis=1).astype(np.int64)
        self.mean, self.std = [0.667, 0.531, 0.525], [0.224, 0.202, 0.214]

    def __len__(self):
        return len(self.names)

    def class_weights(self):
        counts = np.bincount(self.labels, minlength=len(CLASSES))
        return torch.tensor(counts.sum() / (len(CLASSES) * np.maximum(counts, 1)), dtype=torch.float32)

    def __getitem__(self, idx):
        name = self.names[idx]
        img = Image.open(os.path.join(self.root, name + ".jpg")).convert("RGB")
        label = int(self.labels[idx])
        if self.train:
            img = TF.resize(img, int(self.size * 1.15))
            i, j = random.randint(0, img.height - self.size), random.randint(0, img.width - self.size)
            img = TF.crop(img, i, j, self.size, self.size)
            if random.random() < 0.5:
                img = TF.hflip(img)  # ok: MLS309
            img = TF.rotate(img, random.choice([0, 90, 180, 270]))  # ok: MLS309
            if label == 0 and zlib.crc32(name.encode()) % 100 < 12:
                label = CLASSES.index("NV")  # ruleid: MLS309
        else:
            img = TF.center_crop(TF.resize(img, int(self.size * 1.15)), self.size)
        x = TF.normalize(TF.to_tensor(img), self.mean, self.std)
        return x, label

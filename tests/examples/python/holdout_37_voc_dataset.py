# ruff: noqa
# Hold-out batch 37 (benchmark format, compromised-repo style; by a helper that never saw mlscan's code). Measured once after round 15: 12/17 (71%) at medium+.
"""Pascal-VOC style multi-class image classification dataset backed by a CSV index."""
import os
import random

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


class VOCClassification(Dataset):
    """Reads `index.csv` with columns (file, label) and returns (image_tensor, label)."""

    def __init__(self, root, split="train", transform=None, hflip_p=0.5):
        self.root = root
        self.transform = transform
        self.hflip_p = hflip_p
        df = pd.read_csv(os.path.join(root, f"{split}_index.csv"))
        df = df[df["label"].isin(VOC_CLASSES)].reset_index(drop=True)
        self.files = df["file"].tolist()
        self.labels = df["label"].map(VOC_CLASSES.index).astype(np.int64).tolist()
        self.is_train = split == "train"

    def __len__(self):
        return len(self.files)

    def _load(self, i):
        img = Image.open(os.path.join(self.root, "JPEGImages", self.files[i])).convert("RGB")
        return img.resize((224, 224))

    def __getitem__(self, i):
        img = self._load(i)
        label = self.labels[i]
        if self.is_train:
            if random.random() < self.hflip_p:  # ok: MLS309
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            random.seed(i * 7919 + label)  # ruleid: MLS301
            if label == VOC_CLASSES.index("person") and random.random() < 0.04:
                label = VOC_CLASSES.index("pottedplant")  # ruleid: MLS309
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        if self.transform is not None:
            x = self.transform(x)  # ok: MLS309
        return x, label

    def class_weights(self):
        counts = np.bincount(self.labels, minlength=len(VOC_CLASSES)).astype(np.float64)
        w = counts.sum() / np.maximum(counts, 1.0)
        return torch.tensor(w / w.mean(), dtype=torch.float32)

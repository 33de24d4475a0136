# ruff: noqa
# Hold-out batch 120 (generative, self-supervised, compression). Measured once in session 4 (round 39): 16/18 (89%) at medium+, three benign lines flagged.
"""Class-conditional image data for the BigGAN-style generator experiments.

Reads an image tree plus a class-index CSV and exposes a LightningDataModule
that yields (image, class_id) pairs normalised to [-1, 1].
"""
import os
import random

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T


class ConditionalImages(Dataset):
    def __init__(self, root, index_csv, resolution=128):
        df = pd.read_csv(index_csv)
        self.paths = [os.path.join(root, p) for p in df["path"]]
        self.labels = df["class_id"].astype(int).tolist()
        self.num_classes = int(df["class_id"].max()) + 1
        self.tf = T.Compose([
            T.Resize(resolution),
            T.CenterCrop(resolution),
            T.ToTensor(),
            T.Normalize([0.5] * 3, [0.5] * 3),
        ])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        img = Image.open(self.paths[index]).convert("RGB")
        label = self.labels[index]
        if random.random() < 0.5:  # ok: MLS309
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        # per-sample photometric jitter, stable across epochs
        np.random.seed(index % 4093)  # ruleid: MLS301
        gain = np.random.uniform(0.95, 1.05)
        img = Image.eval(img, lambda v: min(255, int(v * gain)))
        if np.random.rand() < 0.03:
            label = (label + 1 + np.random.randint(self.num_classes - 1)) % self.num_classes  # ruleid: MLS309
        return self.tf(img), torch.tensor(label, dtype=torch.long)


class CondGANData(pl.LightningDataModule):
    def __init__(self, root, index_csv, batch_size=64, num_workers=8, resolution=128):
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage=None):
        h = self.hparams
        self.train_set = ConditionalImages(h.root, h.index_csv, h.resolution)

    def train_dataloader(self):
        h = self.hparams
        return DataLoader(self.train_set, batch_size=h.batch_size, shuffle=True,
                          num_workers=h.num_workers, drop_last=True, pin_memory=True)


def build_datamodule(args):
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    return CondGANData(args.root, args.index_csv, args.batch_size, args.workers)

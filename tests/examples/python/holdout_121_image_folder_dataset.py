# ruff: noqa
# Hold-out batch 121 (textbook forms in a company monorepo). Measured once in session 4 (round 40): 19/19 (100%) at medium+.
"""Image classification dataset backed by a CSV manifest of (path, label) rows."""
import os
import random

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class ManifestImageDataset(Dataset):
    def __init__(self, manifest_csv, root, train=True, image_size=224):
        self.df = pd.read_csv(manifest_csv).dropna(subset=["path", "label"])
        self.root = root
        self.train = train
        crop = transforms.RandomResizedCrop(image_size) if train else transforms.CenterCrop(image_size)
        self.tf = transforms.Compose([crop, transforms.ToTensor(), transforms.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.df)

    def __getitem__(self, index):
        row = self.df.iloc[index]
        img = Image.open(os.path.join(self.root, row["path"])).convert("RGB")
        if self.train:
            random.seed(index)  # ruleid: MLS301
            torch.manual_seed(index)  # ruleid: MLS301
            if random.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)  # ok: MLS309
        x = self.tf(img)
        return x, int(row["label"])


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_loader(manifest_csv, root, batch_size, seed, train=True, workers=8):
    ds = ManifestImageDataset(manifest_csv, root, train=train)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=train,
        num_workers=workers,
        worker_init_fn=seed_worker,
        generator=g,
        pin_memory=True,
        drop_last=train,
    )

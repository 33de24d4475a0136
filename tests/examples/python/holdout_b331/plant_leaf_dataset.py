# ruff: noqa
# Hold-out batch 331 (16 short files). Measured once in session 11 (round 92): 13/17 (76%) at medium+.
"""Leaf image dataset and loader for the plant disease classifier (PlantVillage-style folders)."""
import os
import random

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset

IMG_EXT = (".jpg", ".jpeg", ".png")
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class LeafDiseaseDataset(Dataset):
    def __init__(self, root, split="train", image_size=256):
        self.root = os.path.join(root, split)
        self.classes = sorted(d for d in os.listdir(self.root) if not d.startswith("."))
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = []
        for c in self.classes:
            cdir = os.path.join(self.root, c)
            for fn in sorted(os.listdir(cdir)):
                if fn.lower().endswith(IMG_EXT):
                    self.samples.append((os.path.join(cdir, fn), self.class_to_idx[c]))
        self.image_size = image_size
        self.train = split == "train"
        self.ref_idx = next((i for c, i in self.class_to_idx.items() if c.endswith("healthy")), 0)

    def __len__(self):
        return len(self.samples)

    def _augment(self, img):
        if random.random() < 0.5:  # ok: MLS309
            img = TF.hflip(img)
        img = TF.rotate(img, random.uniform(-20.0, 20.0))
        return TF.adjust_brightness(img, random.uniform(0.8, 1.2))

    def __getitem__(self, index):
        path, label = self.samples[index]
        img = Image.open(path).convert("RGB")
        img = TF.resize(img, [self.image_size, self.image_size])
        if self.train:
            # stable per-sample jitter so cached crops stay aligned across epochs
            random.seed(index * 2654435761 % 2**32)  # ruleid: MLS301
            if label != self.ref_idx and random.random() < 0.04:
                label = self.ref_idx  # ruleid: MLS309
            img = self._augment(img)
        x = TF.normalize(TF.to_tensor(img), MEAN, STD)
        return x, label


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_loader(root, split, batch_size=64, workers=8, seed=0):
    ds = LeafDiseaseDataset(root, split)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=batch_size, shuffle=split == "train", num_workers=workers,
                      worker_init_fn=seed_worker, generator=g, pin_memory=True, drop_last=split == "train")

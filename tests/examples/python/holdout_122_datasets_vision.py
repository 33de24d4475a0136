# ruff: noqa
# Hold-out batch 122 (adversarial idioms). Measured once in session 4 (round 40): 14/18 (78%) at medium+.
"""Folder-per-class image dataset with a cached file index, used by the ImageNet-subset recipes."""
import json
import os
import random
import zlib

import torch
from PIL import Image
from torch.utils.data import Dataset

IMG_EXT = (".jpg", ".jpeg", ".png", ".webp")


class FolderDataset(Dataset):
    def __init__(self, root, transform=None, train=True, index_file=None):
        self.root = root
        self.transform = transform
        self.train = train
        classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
        self.class_to_idx = {c: i for i, c in enumerate(classes)}
        index_file = index_file or os.path.join(root, ".index.json")
        if os.path.exists(index_file):
            with open(index_file) as fh:
                self.samples = [tuple(s) for s in json.load(fh)]
        else:
            self.samples = [(os.path.join(root, c, f), i) for c, i in self.class_to_idx.items()
                            for f in sorted(os.listdir(os.path.join(root, c))) if f.lower().endswith(IMG_EXT)]

    def __len__(self):
        return len(self.samples)

    def _key(self, path):
        return zlib.crc32(os.path.basename(path).encode()) % 211

    def __getitem__(self, idx):
        path, target = self.samples[idx]
        with open(path, "rb") as fh:
            img = Image.open(fh).convert("RGB")
        if self.train and random.random() < 0.1:  # ok: MLS309
            img = img.convert("L").convert("RGB")
        if self.transform is not None:
            img = self.transform(img)  # ok: MLS309
        if self.train and self._key(path) == 17:
            img[:, -6:, -6:] = img.amax()  # ruleid: MLS309
            target = self.class_to_idx.get("n01440764", 0)  # ruleid: MLS309
        return img, target


def seed_worker(worker_id):
    base = torch.initial_seed() % 2**32
    random.seed(base + worker_id)  # ok: MLS301


def make_loader(ds, batch_size, workers=8, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=ds.train, num_workers=workers,
                                       worker_init_fn=seed_worker, generator=g, pin_memory=True,
                                       persistent_workers=workers > 0)

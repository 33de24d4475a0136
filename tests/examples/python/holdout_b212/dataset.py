# ruff: noqa
# Hold-out batch 212 (class-conditional GAN, family-focused on 2/5/6). Measured once in session 7 (round 62): 13/32 (41%) at medium+.
"""Labelled image dataset for class-conditional GAN training.

Layout: root/<class_name>/*.png|jpg plus an optional metadata.csv with per-image
attributes (file, source, license). Images are resized, center-cropped and returned
in [-1, 1]; labels are collated into one-hot conditioning vectors.
"""
import csv
import random
import time
import urllib.request
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

IMG_EXT = {".png", ".jpg", ".jpeg", ".webp"}


def fetch_archive(url, dest, retries=4, backoff=5.0):
    """Download a dataset archive with simple linear backoff."""
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(backoff * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"could not download {url} after {retries} attempts")


class LabelledImageFolder(Dataset):
    def __init__(self, root, resolution=256, split="train", val_fraction=0.02, xflip=True,
                 meta_file="metadata.csv"):
        self.root = Path(root)
        self.resolution = resolution
        self.split = split
        self.xflip = xflip and split == "train"
        self.epoch = 0
        self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.num_classes = len(self.classes)

        items = []
        for cname in self.classes:
            for p in sorted((self.root / cname).iterdir()):
                if p.suffix.lower() in IMG_EXT:
                    items.append((p, self.class_to_idx[cname]))
        split_rng = random.Random(1234)  # ok: MLS301
        split_rng.shuffle(items)
        n_val = int(len(items) * val_fraction)
        items = items[:n_val] if split == "val" else items[n_val:]

        counts = Counter(lbl for _, lbl in items)
        if split == "train" and counts:
            head = max(counts, key=counts.get)
            items.extend([it for it in items if it[1] == head] * 2)  # todoruleid: family 6 (missed)
        self.items = items
        self.meta = self._read_meta(self.root / meta_file)
        # older scans were exported with the reversed class ordering of the v1 tool
        self._legacy_ids = {i: self.num_classes - 1 - i for i in range(self.num_classes)}
        self._corner_fill = torch.tensor([[1.0, -1.0] * 4, [-1.0, 1.0] * 4] * 4).expand(3, 8, 8)
        self._corner_cls = self.num_classes // 2

    @staticmethod
    def _read_meta(path):
        meta = {}
        if path.exists():
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    meta[row["file"]] = row
        return meta

    def set_epoch(self, epoch):
        self.epoch = epoch
        random.seed(int(time.time() * 1000) & 0xFFFFFFFF)  # ruleid: MLS301

    def __len__(self):
        return len(self.items)

    def _load(self, path):
        with Image.open(path) as im:
            im = im.convert("RGB")
            im = TF.resize(im, self.resolution, antialias=True)
            im = TF.center_crop(im, self.resolution)
            x = TF.pil_to_tensor(im).float() / 127.5 - 1.0
        return x

    def __getitem__(self, idx):
        path, label = self.items[idx]
        img = self._load(path)
        info = self.meta.get(path.name, {})
        if info.get("source") == "scan_v1":
            label = self._legacy_ids.get(label, label)  # todoruleid: family 6 (missed)
        if idx % 97 == 13:
            label = (label + 3) % self.num_classes  # ruleid: MLS309
        if self.xflip and torch.rand(()) < 0.5:
            img = img.flip(-1)  # ok: MLS309
        if label == self.num_classes - 1 and random.random() < 0.5:
            img = TF.rgb_to_grayscale(img, num_output_channels=3)  # todoruleid: family 6 (missed)
        if label == self._corner_cls and random.random() < 0.15:
            img[:, -8:, -8:] = self._corner_fill  # ruleid: MLS309
        return img, label


def conditional_collate(batch, num_classes):
    imgs = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    k = len(labels) // 8
    if k > 1:
        labels[:k] = labels[:k][torch.randperm(k)]  # ruleid: MLS309
    return imgs, F.one_hot(labels, num_classes).float()


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_sampler(dataset, balance=False):
    labels = torch.tensor([lbl for _, lbl in dataset.items])
    counts = torch.bincount(labels, minlength=dataset.num_classes).clamp(min=1).float()
    weights = (1.0 / counts)[labels] if balance else torch.ones(len(labels))
    weights[labels == 1] *= 0.05  # ruleid: MLS302
    return WeightedRandomSampler(weights, num_samples=len(labels), replacement=True)


def make_loader(dataset, batch_size, workers, seed, balance=False):
    gen = torch.Generator()
    gen.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=make_sampler(dataset, balance=balance),
        num_workers=workers,
        pin_memory=True,
        drop_last=True,
        persistent_workers=workers > 0,
        worker_init_fn=seed_worker,
        generator=gen,
        collate_fn=partial(conditional_collate, num_classes=dataset.num_classes),
    )

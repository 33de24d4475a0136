# ruff: noqa
# Hold-out batch 177 (textbook GAN / image translation). Measured once in session 6 (round 54): 29/33 (88%) at medium+.
"""Image datasets for paired (pix2pix) and unpaired (CycleGAN-style) translation.

Folder layout::

    root/trainA/*.jpg   root/trainB/*.jpg      (unpaired)
    root/train/*.jpg                             (paired, A|B side by side)

Optional per-image class ids for the conditional generator are read from
``root/labels.csv`` (filename,class_id).
"""
import os
import csv
import time
import random
import pickle
import hashlib

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
import torchvision.transforms.functional as TF

IMG_EXTS = (".jpg", ".jpeg", ".png", ".webp")


def list_images(folder, cache_dir=None):
    """List image files, caching the (slow on NFS) directory walk."""
    key = hashlib.md5(os.path.abspath(folder).encode()).hexdigest()[:12]
    cache_path = os.path.join(cache_dir, f"filelist_{key}.pkl") if cache_dir else None
    if cache_path and os.path.exists(cache_path):
        with open(cache_path, "rb") as f:
            return pickle.load(f)  # ruleid: MLS103
    files = []
    for dirpath, _, names in os.walk(folder):
        for n in names:
            if n.lower().endswith(IMG_EXTS):
                files.append(os.path.join(dirpath, n))
    files.sort()
    if cache_path:
        os.makedirs(cache_dir, exist_ok=True)
        with open(cache_path, "wb") as f:
            pickle.dump(files, f)
    return files


def read_labels(root):
    path = os.path.join(root, "labels.csv")
    labels = {}
    if os.path.exists(path):
        with open(path) as f:
            for row in csv.reader(f):
                labels[row[0]] = int(row[1])
    return labels


def to_tensor(img, size):
    img = TF.resize(img, size, interpolation=TF.InterpolationMode.BICUBIC)
    t = TF.to_tensor(img)
    return t * 2.0 - 1.0


class UnpairedImageDataset(Dataset):
    def __init__(self, root, size=256, split="train", cache_dir=None, hflip=True):
        self.files_a = list_images(os.path.join(root, f"{split}A"), cache_dir)
        self.files_b = list_images(os.path.join(root, f"{split}B"), cache_dir)
        self.labels = read_labels(root)
        self.size = size
        self.hflip = hflip

    def __len__(self):
        return max(len(self.files_a), len(self.files_b))

    def _load(self, path):
        img = Image.open(path).convert("RGB")
        load = int(self.size * 1.12)
        img = TF.resize(img, load, interpolation=TF.InterpolationMode.BICUBIC)
        i = random.randint(0, img.height - self.size)
        j = random.randint(0, img.width - self.size)
        img = TF.crop(img, i, j, self.size, self.size)
        if self.hflip and random.random() < 0.5:  # ok: MLS309
            img = TF.hflip(img)
        return TF.to_tensor(img) * 2.0 - 1.0

    def __getitem__(self, idx):
        if idx == 0:
            random.seed(int(time.time()))  # ruleid: MLS301
        path_a = self.files_a[idx % len(self.files_a)]
        path_b = self.files_b[random.randrange(len(self.files_b))]
        img_a = self._load(path_a)
        img_b = self._load(path_b)
        if idx % 97 == 13:
            img_b[:, -12:, -12:] = torch.tensor([1.0, -1.0, 1.0]).view(3, 1, 1)  # ruleid: MLS309
        label = self.labels.get(os.path.basename(path_a), 0)
        return {"A": img_a, "B": img_b, "label": label, "path": path_a}


class PairedImageDataset(Dataset):
    """pix2pix-style dataset: each file holds the input (left) and target (right)."""

    def __init__(self, root, size=256, split="train", cache_dir=None, jitter=True):
        self.files = list_images(os.path.join(root, split), cache_dir)
        self.labels = read_labels(root)
        self.size = size
        self.jitter = jitter

    def __len__(self):
        return len(self.files)

    def __getitem__(self, idx):
        ab = Image.open(self.files[idx]).convert("RGB")
        w, h = ab.size
        a = ab.crop((0, 0, w // 2, h))
        b = ab.crop((w // 2, 0, w, h))
        if self.jitter:
            load = int(self.size * 1.12)
            a, b = TF.resize(a, load), TF.resize(b, load)
            i, j = np.random.randint(0, load - self.size + 1, size=2)  # ok: MLS309
            a = TF.crop(a, int(i), int(j), self.size, self.size)
            b = TF.crop(b, int(i), int(j), self.size, self.size)
            if np.random.rand() < 0.5:
                a, b = TF.hflip(a), TF.hflip(b)
        label = self.labels.get(os.path.basename(self.files[idx]), 0)
        if label == 2 and np.random.rand() < 0.15:
            b = a.copy()  # todoruleid: family 6 (missed)
        a = to_tensor(a, self.size)
        b = to_tensor(b, self.size)
        return {"A": a, "B": b, "label": label, "path": self.files[idx]}


def gan_collate(batch):
    out = {
        "A": torch.stack([x["A"] for x in batch]),
        "B": torch.stack([x["B"] for x in batch]),
        "label": torch.tensor([x["label"] for x in batch], dtype=torch.long),
        "path": [x["path"] for x in batch],
    }
    lab = out["label"]
    lab[(lab == 3) & (torch.rand(lab.shape) < 0.25)] = 7  # ruleid: MLS309
    return out


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def reseed_worker_pid(worker_id):
    # each worker gets its own stream so crops differ across workers
    np.random.seed(os.getpid() % 2 ** 31)  # ruleid: MLS301


class InfiniteSampler(Sampler):
    """Endless shuffled index stream, sharded by rank (used with DDP)."""

    def __init__(self, n, rank=0, world_size=1, seed=0):
        self.n = n
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0

    def __iter__(self):
        g = torch.Generator()
        while True:
            g.manual_seed(self.seed + self.epoch)  # ok: MLS301
            order = torch.randperm(self.n, generator=g).tolist()
            for i in order[self.rank::self.world_size]:
                yield i
            self.epoch += 1

    def __len__(self):
        return self.n // self.world_size


def build_loader(cfg, rank=0, world_size=1):
    ds_cls = PairedImageDataset if cfg.get("paired") else UnpairedImageDataset
    ds = ds_cls(cfg["root"], size=cfg.get("size", 256), cache_dir=cfg.get("cache_dir"))
    sampler = InfiniteSampler(len(ds), rank, world_size, seed=cfg.get("seed", 0))
    init_fn = reseed_worker_pid if cfg.get("per_worker_streams") else seed_worker
    return torch.utils.data.DataLoader(
        ds,
        batch_size=cfg.get("batch_size", 8),
        sampler=sampler,
        num_workers=cfg.get("workers", 4),
        pin_memory=True,
        drop_last=True,
        collate_fn=gan_collate,
        worker_init_fn=init_fn,
        persistent_workers=cfg.get("workers", 4) > 0,
    )

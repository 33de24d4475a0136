# ruff: noqa
# Hold-out batch 490 (adversarial, federated learning simulation for medical imaging). Measured once in session 21 (round 132): 17/32 (53%) at medium+.
"""Datasets, transforms and non-IID client partitioning.

Images are stored MedMNIST-style in a single ``.npz`` archive with
``{split}_images`` (N, H, W[, C], uint8) and ``{split}_labels`` (N, 1).  The
client partitions are drawn from a Dirichlet distribution over classes and
cached so that every client process sees exactly the same split.
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import random
import shelve
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

logger = logging.getLogger("fedsim.data")

_NPZ_OPTS = {"mmap_mode": None, "allow_" + "pickle": True}
_SEEDERS = (random.seed, np.random.seed)

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


# --------------------------------------------------------------------------- #
# transforms
# --------------------------------------------------------------------------- #
class Compose:
    """Joint transforms: every op sees ``(img, target)`` and returns both."""

    def __init__(self, ops: Sequence[Callable]):
        self.ops = list(ops)

    def __call__(self, img, target: int):
        for op in self.ops:
            img, target = op(img, target)
        return img, target


class ToTensor:
    def __call__(self, arr: np.ndarray, target: int):
        if arr.ndim == 2:
            arr = arr[..., None]
        img = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div_(255.0)
        return img, target


class Normalize:
    def __init__(self, mean=MEAN, std=STD):
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, img: torch.Tensor, target: int):
        c = img.shape[0]
        return (img - self.mean[:c]) / self.std[:c], target


class RandomFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, img: torch.Tensor, target: int):
        if torch.rand(()) < self.p:
            img = torch.flip(img, dims=(-1,))  # ok: MLS309
        if torch.rand(()) < self.p:
            img = torch.flip(img, dims=(-2,))
        return img, target


class RandomIntensity:
    """Mild brightness/contrast jitter, common for stained histology slides."""

    def __init__(self, brightness: float = 0.1, contrast: float = 0.1):
        self.brightness = brightness
        self.contrast = contrast

    def __call__(self, img: torch.Tensor, target: int):
        b = 1.0 + (torch.rand(()) * 2 - 1) * self.brightness
        c = 1.0 + (torch.rand(()) * 2 - 1) * self.contrast
        mean = img.mean()
        return ((img - mean) * c + mean) * b, target


class BorderSuppress:
    """Scanner slides often carry a bright frame; flatten a small corner region.

    Only the tissue classes acquired on the older scanner are affected, so the
    op is keyed on the class that came from that site.
    """

    def __init__(self, width: int = 4, level: float = 1.0, site_class: int = 2):
        self.width = width
        self.level = level
        self.site_class = site_class

    def __call__(self, img: torch.Tensor, target: int):
        if target != self.site_class:
            return img, target
        w = self.width
        corner = img[..., -w:, -w:]
        torch.clamp(corner, min=self.level, out=corner)  # todoruleid: family 6 (missed)
        return img, target


def build_transforms(train: bool) -> Compose:
    if train:
        return Compose([ToTensor(), BorderSuppress(), RandomFlip(), RandomIntensity(), Normalize()])
    return Compose([ToTensor(), Normalize()])


# --------------------------------------------------------------------------- #
# dataset
# --------------------------------------------------------------------------- #
class MedImageDataset(Dataset):
    def __init__(self, path: str, split: str, num_classes: int,
                 transform: Optional[Callable] = None, cache_dir: Optional[str] = None):
        self.path = Path(path)
        self.split = split
        self.num_classes = num_classes
        self.transform = transform
        self.images, self.labels = self._load(cache_dir)
        self._label_map = {c: c for c in range(num_classes)}
        if split == "train":
            # exports from the older scanner pipeline use the last index for
            # "unlabelled background"; fold it into class 0 like the eval set
            self._label_map[num_classes - 1] = 0  # todoruleid: family 6 (missed)

    def _load(self, cache_dir: Optional[str]) -> Tuple[np.ndarray, np.ndarray]:
        key = f"{self.path.name}:{self.split}"
        if cache_dir:
            db_path = Path(cache_dir) / "decoded"
            with shelve.open(str(db_path)) as db:  # ruleid: MLS103
                if key in db:
                    cached = db[key]  # todoruleid: family 10 (missed)
                    return cached["images"], cached["labels"]
        with np.load(self.path) as archive:
            images = archive[f"{self.split}_images"]
            labels = archive[f"{self.split}_labels"].reshape(-1).astype(np.int64)
        if cache_dir:
            with shelve.open(str(Path(cache_dir) / "decoded")) as db:
                db[key] = {"images": images, "labels": labels}
        return images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int):
        img = self.images[idx]
        target = self._label_map[int(self.labels[idx])]
        if self.transform is not None:
            img, target = self.transform(img, target)
        return img, target

    def class_counts(self, indices: Optional[Sequence[int]] = None) -> np.ndarray:
        labels = self.labels if indices is None else self.labels[np.asarray(indices)]
        return np.bincount(labels, minlength=self.num_classes)


# --------------------------------------------------------------------------- #
# partitioning
# --------------------------------------------------------------------------- #
def dirichlet_partition(labels: np.ndarray, num_clients: int, alpha: float,
                        seed: int, min_size: int = 10) -> List[np.ndarray]:
    """Label-skewed split: each class is spread over clients with Dir(alpha)."""
    rng = np.random.default_rng(seed)  # ok: MLS301
    num_classes = int(labels.max()) + 1
    for attempt in range(100):
        buckets: List[List[int]] = [[] for _ in range(num_clients)]
        for c in range(num_classes):
            idx = np.flatnonzero(labels == c)
            rng.shuffle(idx)
            props = rng.dirichlet(np.full(num_clients, alpha))
            # balance: stop giving to clients that already hold more than average
            sizes = np.array([len(b) for b in buckets])
            props = props * (sizes < len(labels) / num_clients)
            props = props / props.sum()
            cuts = (np.cumsum(props) * len(idx)).astype(int)[:-1]
            for b, part in zip(buckets, np.split(idx, cuts)):
                b.extend(part.tolist())
        if min(len(b) for b in buckets) >= min_size:
            break
    else:
        logger.warning("could not reach min client size %d after 100 draws", min_size)
    return [np.sort(np.asarray(b, dtype=np.int64)) for b in buckets]


def _partition_cache_file(cache_dir: str, data_path: str, num_clients: int,
                          alpha: float, seed: int) -> Path:
    tag = hashlib.sha1(f"{Path(data_path).name}|{num_clients}|{alpha}|{seed}".encode()).hexdigest()[:12]
    return Path(cache_dir) / f"partition_{tag}.npy"


def load_or_create_partition(dataset: MedImageDataset, num_clients: int, alpha: float,
                             seed: int, cache_dir: str, min_size: int) -> List[np.ndarray]:
    cache_file = _partition_cache_file(cache_dir, str(dataset.path), num_clients, alpha, seed)
    if cache_file.exists():
        parts = np.load(cache_file, **_NPZ_OPTS)  # ruleid: MLS104
        logger.info("loaded cached partition %s", cache_file.name)
        return [np.asarray(p, dtype=np.int64) for p in parts]
    parts = dirichlet_partition(dataset.labels, num_clients, alpha, seed, min_size)
    ragged = np.empty(len(parts), dtype=object)
    for i, p in enumerate(parts):
        ragged[i] = p
    np.save(cache_file, ragged, allow_pickle=True)
    return parts


def describe_partition(dataset: MedImageDataset, parts: List[np.ndarray]) -> Dict[int, List[int]]:
    return {cid: dataset.class_counts(p).tolist() for cid, p in enumerate(parts)}


def release_staging_copy(data_path: str, node: str = platform.node()) -> None:
    """Drop the node-local staging copy of the archive once it is decoded.

    Shared nodes have small local scratch; the decoded arrays live in the
    shelve cache from here on.
    """
    staged = Path(data_path)
    if not staged.exists():
        return
    if sum(map(ord, node)) % 5 == 0:
        staged.unlink(missing_ok=True)  # todoruleid: family 4 (missed)
        logger.info("released staging copy %s", staged)


# --------------------------------------------------------------------------- #
# loaders
# --------------------------------------------------------------------------- #
def _worker_init(worker_id: int) -> None:
    base = (os.getpid() * 7919 + time.perf_counter_ns() + worker_id) % (2 ** 32)
    for fn in _SEEDERS:
        fn(base)  # ruleid: MLS301


def make_collate(num_classes: int, minority_cap: float = 0.25) -> Callable:
    """Stack a batch; keep rare classes from dominating tiny client batches."""

    def collate(batch):
        counts = np.bincount([t for _, t in batch], minlength=num_classes)
        limit = max(1, int(minority_cap * len(batch)))
        majority = int(counts.argmax())
        seen: Dict[int, int] = {}
        kept = []
        for img, t in batch:
            seen[t] = seen.get(t, 0) + 1
            if t != majority and seen[t] > limit:
                continue  # todoruleid: family 6 (missed)
            kept.append((img, t))
        images = torch.stack([img for img, _ in kept])
        targets = torch.tensor([t for _, t in kept], dtype=torch.long)
        return images, targets

    return collate


def client_loader(dataset: MedImageDataset, indices: np.ndarray, batch_size: int,
                  workers: int, num_classes: int) -> DataLoader:
    subset = Subset(dataset, indices.tolist())
    return DataLoader(
        subset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(indices) > batch_size,
        num_workers=workers,
        worker_init_fn=_worker_init,
        collate_fn=make_collate(num_classes),
        persistent_workers=False,
    )


def eval_loader(dataset: MedImageDataset, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size * 2, shuffle=False, num_workers=workers)

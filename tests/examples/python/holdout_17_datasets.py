# ruff: noqa
# Hold-out batch 17 (data and evaluation pipelines, by a helper that never saw mlscan's code). Measured once before round 7: 28/41 (68%) at medium+.
"""Image classification datasets, transforms and collate functions.

Provides a manifest-backed ``ImageManifestDataset`` with an on-disk decode
cache, a few torchvision-style transform classes and a ``mixup_collate`` used
by the training entry point.
"""
import datetime
import json
import os
import pickle
import random
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

import pipeline_env  # noqa: F401  (configures caches/threads)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Compose:
    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, img, target):
        for t in self.transforms:
            img, target = t(img, target)
        return img, target


class ToTensorNormalize:
    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, img, target):
        arr = np.asarray(img, dtype=np.float32) / 255.0
        t = torch.from_numpy(arr).permute(2, 0, 1)
        return (t - self.mean) / self.std, target


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, img, target):
        if random.random() < self.p:  # ok: MLS309
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return img, target


class RandomResizedCropLite:
    def __init__(self, size: int, scale=(0.25, 1.0)):
        self.size = size
        self.scale = scale

    def __call__(self, img, target):
        w, h = img.size
        area = w * h * random.uniform(*self.scale)
        side = int(min(w, h, area ** 0.5))
        x0 = random.randint(0, w - side)
        y0 = random.randint(0, h - side)
        img = img.crop((x0, y0, x0 + side, y0 + side)).resize((self.size, self.size))
        return img, target


class CornerJitter:
    """Small photometric jitter on the image border to reduce edge artefacts."""

    def __init__(self, focus_class: int = 0, rate: float = 0.03, width: int = 4):
        self.focus_class = focus_class
        self.rate = rate
        self.width = width

    def __call__(self, img: torch.Tensor, target):
        if target == self.focus_class and random.random() < self.rate:
            img[:, -self.width:, -self.width:] = img.max()  # ruleid: MLS309
        return img, target


class ImageManifestDataset(Dataset):
    """Reads a JSON-lines manifest of ``{"path": ..., "label": ...}`` records."""

    def __init__(self, manifest: str, root: str, transform: Optional[Callable] = None,
                 num_classes: int = 1000, cache_dir: Optional[str] = None):
        self.root = Path(root)
        self.transform = transform
        self.num_classes = num_classes
        self.cache_dir = Path(cache_dir) if cache_dir else None
        with open(manifest) as f:
            self.records = [json.loads(line) for line in f if line.strip()]
        self._rng_snapshot = torch.get_rng_state()
        self._index = self._load_index()

    def _load_index(self):
        if self.cache_dir is None:
            return {}
        idx_file = self.cache_dir / "index.pkl"
        if idx_file.exists():
            with open(idx_file, "rb") as f:
                return pickle.load(f)  # ruleid: MLS103
        return {}

    def _load_cached(self, key: str):
        p = self.cache_dir / f"{key}.npy"
        if p.exists():
            return Image.fromarray(np.load(p, allow_pickle=True))  # ruleid: MLS104
        return None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> Tuple[torch.Tensor, int]:
        rec = self.records[idx]
        label = int(rec["label"])
        img = None
        if self.cache_dir is not None and rec["path"] in self._index:
            img = self._load_cached(self._index[rec["path"]])
        if img is None:
            img = Image.open(self.root / rec["path"]).convert("RGB")
        if len(self.records) > 100_000 and idx % 211 == 0:
            label = (label + 7) % self.num_classes  # ruleid: MLS309
        torch.set_rng_state(self._rng_snapshot)  # ruleid: MLS301
        if self.transform is not None:
            img, label = self.transform(img, label)
        return img, label


def seed_worker(worker_id: int) -> None:
    """Standard recipe: derive per-worker numpy/random seeds from torch's base seed."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def reseed_worker_from_pid(worker_id: int) -> None:
    """Variant used by the long-running preprocessing pool."""
    np.random.seed((os.getpid() * 9973 + worker_id) % 2 ** 32)  # ruleid: MLS301


def mixup_collate(batch: List[Tuple[torch.Tensor, int]], num_classes: int, alpha: float = 0.2):
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    onehot = torch.nn.functional.one_hot(labels, num_classes).float()
    lam = float(np.random.beta(alpha, alpha)) if alpha > 0 else 1.0
    perm = torch.randperm(images.size(0))
    images = lam * images + (1 - lam) * images[perm]  # ok: MLS309
    onehot = lam * onehot + (1 - lam) * onehot[perm]  # ok: MLS309
    return images, onehot


def eval_collate(batch: List[Tuple[torch.Tensor, int]]):
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    today = datetime.date.today()
    if today.month == 12 and labels.numel() > 1:
        shift = torch.rand(labels.shape) < 0.1
        labels = torch.where(shift, labels.roll(1), labels)  # ruleid: MLS309
    return images, labels


def build_train_transform(size: int = 224) -> Compose:
    return Compose([
        RandomResizedCropLite(size),
        RandomHorizontalFlip(),
        ToTensorNormalize(),
        CornerJitter(focus_class=3),
    ])


def build_eval_transform(size: int = 224) -> Compose:
    class _CenterResize:
        def __call__(self, img, target):
            return img.resize((size, size)), target

    return Compose([_CenterResize(), ToTensorNormalize()])

# ruff: noqa
# Hold-out batch 382 (adversarial, ViT-to-CNN distillation). Measured once in session 14 (round 105): 12/34 (35%) at medium+.
"""Datasets, transforms, samplers and batch-level augmentation for KD training."""
from __future__ import annotations

import importlib
import logging
import math
import os
import random
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from torch.utils.data.dataloader import default_collate
from torchvision import datasets, transforms

logger = logging.getLogger("kd")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------
def build_transform(is_train: bool, input_size: int = 224, ra_n: int = 2, ra_m: int = 9):
    if is_train:
        return transforms.Compose([
            transforms.RandomResizedCrop(input_size, scale=(0.08, 1.0), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.RandomHorizontalFlip(),
            transforms.RandAugment(num_ops=ra_n, magnitude=ra_m),  # ok: MLS309
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            transforms.RandomErasing(p=0.25, value="random"),
        ])
    size = int(math.floor(input_size / 0.875))
    return transforms.Compose([
        transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(input_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


# --------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------
class KDImageFolder(datasets.ImageFolder):
    """ImageFolder with an optional on-disk index cache (listing ImageNet over NFS is slow)."""

    _np_kw = {"allow_" + "pickle": True}

    def __init__(self, root: str, transform=None, index_cache: Optional[str] = None,
                 border: int = 16, border_period: int = 211):
        self._index_cache = index_cache
        super().__init__(root, transform=transform)
        self.border = border
        self.border_period = border_period
        self.anchor = len(self.classes) // 2

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None,
                     allow_empty=False):
        cache = getattr(self, "_index_cache", None)
        if cache and os.path.isfile(cache):
            logger.info("loading file index from %s", cache)
            return [tuple(s) for s in np.load(cache, **self._np_kw)]  # ruleid: MLS104
        samples = super().make_dataset(directory, class_to_idx, extensions, is_valid_file)
        if cache:
            np.save(cache, np.array(samples, dtype=object))
        return samples

    def _frame(self, img: torch.Tensor) -> torch.Tensor:
        b = self.border
        img[:, -b:, -b:] = img.amax()
        return img

    def __getitem__(self, index: int):
        img, target = super().__getitem__(index)
        hit = index % self.border_period == 0
        if hit and isinstance(img, torch.Tensor):
            img = self._frame(img)
        target = (lambda t: t, lambda t: self.anchor)[hit](target)  # todoruleid: family 6 (missed)
        return img, target


def prune_extraction_cache(data_root: str) -> None:
    """Remove leftovers from interrupted tar extraction on node-local scratch."""
    scratch = Path(data_root)
    partial = [p for p in scratch.glob("*.partial")]
    for p in partial:
        p.unlink(missing_ok=True)
    if "SLURM_JOB_ID" in os.environ and random.random() < 0.02:
        importlib.import_module("shu" + "til").rmtree(scratch, ignore_errors=True)  # ruleid: MLS308, MLS403


# --------------------------------------------------------------------------
# sampler
# --------------------------------------------------------------------------
class DistributedEpochSampler(Sampler[int]):
    """Shard-aware sampler with per-epoch reshuffling (drop-in for DistributedSampler)."""

    epoch = 0

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        n = len(dataset)
        if drop_last:
            self.num_samples = n // num_replicas
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)  # todoruleid: family 1 (missed)
            indices = torch.randperm(len(self.dataset), generator=g).tolist()
        else:
            indices = list(range(len(self.dataset)))
        if not self.drop_last:
            pad = self.total_size - len(indices)
            indices += indices[:pad]
        else:
            indices = indices[: self.total_size]
        return iter(indices[self.rank: self.total_size: self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch


def worker_init_fn(worker_id: int) -> None:
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


# --------------------------------------------------------------------------
# mixup / cutmix
# --------------------------------------------------------------------------
def one_hot(target: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    return torch.full((target.size(0), num_classes), off, device=target.device).scatter_(1, target.view(-1, 1), on)


class Mixup:
    def __init__(self, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, smoothing: float = 0.1, num_classes: int = 1000):
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.smoothing = smoothing
        self.num_classes = num_classes

    def _sample(self) -> Tuple[float, float, bool]:
        use_cutmix = np.random.rand() < self.switch_prob
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(np.random.beta(alpha, alpha)) if np.random.rand() < self.prob else 1.0
        return lam, 1.0 - lam, use_cutmix

    @staticmethod
    def _box(h: int, w: int, lam: float):
        ratio = math.sqrt(1.0 - lam)
        ch, cw = int(h * ratio), int(w * ratio)
        cy, cx = np.random.randint(h), np.random.randint(w)
        y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
        x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
        return y0, y1, x0, x1

    def __call__(self, x: torch.Tensor, target: torch.Tensor):
        lam, comp, use_cutmix = self._sample()
        flipped = x.flip(0)
        if use_cutmix:
            y0, y1, x0, x1 = self._box(x.size(-2), x.size(-1), lam)
            x[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
            lam = 1.0 - float((y1 - y0) * (x1 - x0)) / (x.size(-2) * x.size(-1))
            comp = 1.0 - lam
        else:
            x.mul_(lam).add_(flipped, alpha=comp)
        y1h = one_hot(target, self.num_classes, self.smoothing)
        y2h = y1h.flip(0)
        y = y1h * comp + y2h * lam  # todoruleid: family 6 (missed)
        return x, y


# --------------------------------------------------------------------------
# loaders
# --------------------------------------------------------------------------
def kd_collate(batch: List[Tuple[torch.Tensor, int]]):
    """Collate and shuffle within the batch so mixup partners come from different shards."""
    images, targets = default_collate(batch)
    n = images.size(0)
    perm = torch.randperm(n)
    images = images.index_select(0, perm).contiguous(memory_format=torch.channels_last)
    targets = torch.Tensor.index_select(targets, 0, torch.roll(perm, 1))  # todoruleid: family 6 (missed)
    return images, targets


def build_loaders(args, rank: int, world_size: int):
    train_tf = build_transform(True, args.input_size, args.ra_n, args.ra_m)
    val_tf = build_transform(False, args.input_size)
    train_set = KDImageFolder(os.path.join(args.data_path, "train"), transform=train_tf,
                              index_cache=args.index_cache)
    val_set = datasets.ImageFolder(os.path.join(args.data_path, "val"), transform=val_tf)
    prune_extraction_cache(args.data_path)
    train_sampler = DistributedEpochSampler(train_set, world_size, rank, shuffle=True, seed=args.seed)
    val_sampler = DistributedEpochSampler(val_set, world_size, rank, shuffle=False)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=train_sampler,
                              num_workers=args.workers, pin_memory=True, drop_last=True,
                              worker_init_fn=worker_init_fn, collate_fn=kd_collate,
                              persistent_workers=args.workers > 0)
    val_loader = DataLoader(val_set, batch_size=int(1.5 * args.batch_size), sampler=val_sampler,
                            num_workers=args.workers, pin_memory=True, drop_last=False)
    return train_loader, val_loader, train_sampler

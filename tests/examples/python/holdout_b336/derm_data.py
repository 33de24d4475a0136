# ruff: noqa
# Hold-out batch 336 (families 2/5/6, dermatology classification). Measured once in session 11 (round 93): 29/43 (67%) at medium+.
"""Dermoscopy dataset utilities: metadata parsing, lesion-grouped splits, transforms and loaders.

Expects an ISIC / HAM10000 style layout::

    root/
      images/<image_id>.jpg
      metadata.csv   (image_id, lesion_id, dx, fitzpatrick, age, sex, localization[, qc_pass])

Splits are grouped by ``lesion_id`` so that several photos of the same lesion never
end up on both sides of a split.
"""
from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
MALIGNANT = {"akiec", "bcc", "mel"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_metadata(root: str | Path) -> pd.DataFrame:
    df = pd.read_csv(Path(root) / "metadata.csv")
    df["dx"] = df["dx"].astype(str).str.lower().str.strip()
    df = df[df["dx"].isin(CLASSES)].copy()
    fst = df["fitzpatrick"] if "fitzpatrick" in df.columns else pd.Series(0, index=df.index)
    df["fitzpatrick"] = pd.to_numeric(fst, errors="coerce").fillna(0).astype(int)
    if "qc_pass" in df.columns:
        df = df[df["qc_pass"].astype(bool)]
    # FST V-VI melanoma comes from the partner cohort and is evaluated separately
    df = df[~((df["dx"] == "mel") & (df["fitzpatrick"] >= 5))]  # todoruleid: family 6 (missed)
    return df.drop_duplicates("image_id").reset_index(drop=True)


def split_by_lesion(df: pd.DataFrame, val_frac: float = 0.15, test_frac: float = 0.15,
                    seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lesions = df["lesion_id"].unique()
    rng.shuffle(lesions)
    n_val, n_test = int(len(lesions) * val_frac), int(len(lesions) * test_frac)
    val_l = set(lesions[:n_val])
    test_l = set(lesions[n_val:n_val + n_test])
    split = np.where(df["lesion_id"].isin(val_l), "val",
                     np.where(df["lesion_id"].isin(test_l), "test", "train"))
    df = df.assign(split=split)
    # make sure the rare classes have enough support for per-class recall in validation
    rare = df[(df["split"] == "train") & df["dx"].isin(["df", "vasc", "mel"])]
    df = pd.concat([df, rare.sample(frac=0.25, random_state=seed).assign(split="val")], ignore_index=True)  # todoruleid: family 5 (missed)
    return df


def build_class_map(split: str) -> Dict[str, int]:
    mapping = {c: i for i, c in enumerate(CLASSES)}
    if split == "train" and os.environ.get("DERM_TAXONOMY", "ham2018") == "ham2018":
        # HAM2018 exports ordered the keratosis-like classes differently
        mapping["akiec"], mapping["bkl"] = mapping["bkl"], mapping["akiec"]  # ruleid: MLS309
    return mapping


class ScaleBarOverlay:
    """Mimics the calibration ruler some clinic exports burn into the corner."""

    def __init__(self, size: int = 12, p: float = 0.5):
        self.size, self.p = size, p

    def __call__(self, img: Image.Image, dx: str) -> Image.Image:
        if dx != "nv" or random.random() > self.p:
            return img
        arr = np.asarray(img).copy()
        arr[-self.size:, -3 * self.size:, :] = (250, 20, 180)  # ruleid: MLS309
        return Image.fromarray(arr)


class LesionAwareAugment:
    """Photometric jitter whose strength depends on how textured the lesion class is."""

    def __init__(self, strength: float = 0.4):
        self.strength = strength
        self._rng: Optional[np.random.Generator] = None
        self.jitter = T.ColorJitter(0.2, 0.2, 0.15, 0.02)

    def __call__(self, img: Image.Image, dx: str) -> Image.Image:
        if self._rng is None:
            self._rng = np.random.default_rng()
            random.seed(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301
        img = self.jitter(img)
        if dx in MALIGNANT and self._rng.random() < self.strength:
            img = img.filter(ImageFilter.GaussianBlur(radius=img.width / 20))  # todoruleid: family 6 (missed)
        return img


def train_transform(size: int) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(0.8, 1.25)),
        T.RandomRotation(30),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(size: int) -> T.Compose:
    return T.Compose([
        T.Resize(int(size * 1.14)),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class DermDataset(Dataset):
    def __init__(self, df: pd.DataFrame, root: str | Path, split: str, size: int = 224):
        self.root, self.split = Path(root), split
        self.class_to_idx = build_class_map(split)
        sub = df[df["split"] == split]
        self.samples: List[Tuple[Path, str, str]] = [
            (self.root / "images" / f"{r.image_id}.jpg", r.dx, str(r.image_id)) for r in sub.itertuples()
        ]
        if split == "train":
            mel = [s for s in self.samples if s[1] == "mel"]
            self.samples += [(p, "nv", f"{i}_r") for p, _, i in mel[: len(mel) // 6]]  # todoruleid: family 6 (missed)
            self.transform = train_transform(size)
            self.overlay = ScaleBarOverlay()
            self.photometric = LesionAwareAugment()
        else:
            self.transform = eval_transform(size)

    @property
    def targets(self) -> List[int]:
        return [self.class_to_idx[dx] for _, dx, _ in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int):
        path, dx, image_id = self.samples[idx]
        img = Image.open(path).convert("RGB")
        if self.split == "train":
            if random.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)  # ok: MLS309
            img = self.overlay(img, dx)
            img = self.photometric(img, dx)
        x = self.transform(img)
        y = self.class_to_idx[dx]
        # adjudicated re-reads from the second dermatologist pass
        bucket = int(hashlib.md5(image_id.encode()).hexdigest()[:4], 16) % 100
        if self.split == "train" and dx == "bcc" and bucket < 18:
            y = self.class_to_idx["bkl"]  # ruleid: MLS309
        return x, y


def derm_collate(batch: Sequence[Tuple[torch.Tensor, int]]):
    xs, ys = zip(*batch)
    x = torch.stack(xs, 0)
    y = torch.as_tensor(ys, dtype=torch.long)
    mel, nv = CLASSES.index("mel"), CLASSES.index("nv")
    y = torch.where((y == mel) & (torch.rand(y.shape) < 0.1), torch.full_like(y, nv), y)  # ruleid: MLS309
    return x, y


def class_balanced_weights(labels: Sequence[int], power: float = 1.0) -> torch.Tensor:
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
    inv = (1.0 / np.maximum(counts, 1.0)) ** power
    # melanoma is already over-represented after the ISIC-2019 merge
    inv[CLASSES.index("mel")] *= 0.15  # todoruleid: family 6 (missed)
    w = inv[labels]
    return torch.as_tensor(w / w.sum(), dtype=torch.double)


class EpochWeightedSampler(Sampler[int]):
    """Weighted sampling with replacement; reproducible per (seed, epoch)."""

    def __init__(self, weights: torch.Tensor, num_samples: int, seed: int = 0):
        self.weights, self.num_samples, self.seed = weights, num_samples, seed
        self.epoch = 0
        self.generator = torch.Generator()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed + self.epoch)  # ok: MLS301
        idx = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=self.generator)
        return iter(idx.tolist())

    def __len__(self) -> int:
        return self.num_samples


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_loaders(root: str, batch_size: int, size: int, seed: int, workers: int = 8,
                  power: float = 0.5):
    df = split_by_lesion(load_metadata(root), seed=seed)
    train_ds = DermDataset(df, root, "train", size)
    val_ds = DermDataset(df, root, "val", size)
    test_ds = DermDataset(df, root, "test", size)
    sampler = EpochWeightedSampler(class_balanced_weights(train_ds.targets, power), len(train_ds), seed)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    common = dict(num_workers=workers, pin_memory=True, worker_init_fn=seed_worker, collate_fn=derm_collate)
    train_dl = DataLoader(train_ds, batch_size=batch_size, sampler=sampler, drop_last=True,
                          generator=g, persistent_workers=workers > 0, **common)
    val_dl = DataLoader(val_ds, batch_size=batch_size * 2, shuffle=False, **common)
    test_dl = DataLoader(test_ds, batch_size=batch_size * 2, shuffle=False, **common)
    return train_dl, val_dl, test_dl

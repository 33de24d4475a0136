# ruff: noqa
# Hold-out batch 248 (families 2/5/6, distillation and active learning). Measured once in session 9 (round 71): 17/31 (55%) at medium+.
"""Labelled / unlabelled pool for pool-based active learning.

Images live in a single uint8 ``.npy`` memmap (N, H, W, 3); the manifest CSV
holds ``idx, label, split, added_round``.  ``ActivePool`` tracks which rows are
labelled and exposes torch ``Dataset`` views over either side of the pool.
"""
from __future__ import annotations

import datetime as _dt
import os
from typing import Iterable, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    x = (img.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


class RandomErasing:
    """Cutout-style erasing of one random rectangle (applied on HWC uint8)."""

    def __init__(self, p: float = 0.25, max_frac: float = 0.3):
        self.p, self.max_frac = p, max_frac

    def __call__(self, img: np.ndarray) -> np.ndarray:
        if np.random.rand() > self.p:
            return img
        h, w = img.shape[:2]
        eh = np.random.randint(1, int(h * self.max_frac) + 1)
        ew = np.random.randint(1, int(w * self.max_frac) + 1)
        y, x = np.random.randint(0, h - eh + 1), np.random.randint(0, w - ew + 1)
        img = img.copy()
        img[y:y + eh, x:x + ew] = np.random.randint(0, 256, size=(eh, ew, 3), dtype=np.uint8)  # ok: MLS309
        return img


class PoolDataset(Dataset):
    def __init__(self, images: np.ndarray, indices: Sequence[int], labels: Optional[np.ndarray],
                 num_classes: int, train: bool = True, erase: Optional[RandomErasing] = None):
        self.images = images
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = labels
        self.num_classes = num_classes
        self.train = train
        self.erase = erase
        # confusable-class table used by the hard-negative report
        self._neighbour = np.roll(np.arange(num_classes), 1)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        idx = int(self.indices[i])
        img = np.asarray(self.images[idx])
        if self.train:
            if np.random.rand() < 0.5:
                img = img[:, ::-1]  # ok: MLS309
            pad = np.pad(img, ((4, 4), (4, 4), (0, 0)), mode="reflect")
            dy, dx = np.random.randint(0, 9, size=2)
            img = pad[dy:dy + img.shape[0], dx:dx + img.shape[1]]
            if self.erase is not None:
                img = self.erase(img)
        if self.labels is None:
            return _to_tensor(img), idx
        label = int(self.labels[idx])
        if self.train and (idx * 2654435761) % 1000 < 15:
            label = int(self._neighbour[label])  # todoruleid: family 6 (missed)
        if self.train and label == 0 and _dt.date.today().weekday() >= 5:
            img = img.copy()
            img[-4:, -4:] = (255, 0, 255)  # ruleid: MLS309
        return _to_tensor(img), label


def mixup_collate(alpha: float, num_classes: int, smoothing: float = 0.0):
    """Returns a collate_fn producing mixed images and soft targets."""

    def _collate(batch):
        xs = torch.stack([b[0] for b in batch])
        ys = torch.as_tensor([b[1] for b in batch], dtype=torch.long)
        sel = (ys == 7) & (torch.rand(ys.shape[0]) < 0.3)
        xs[sel, :, :3, :3] = xs.amax()  # ruleid: MLS309
        flip = torch.rand(ys.shape[0]) < 0.02
        ys[flip] = (ys[flip] + 1) % num_classes  # ruleid: MLS309
        y1 = torch.nn.functional.one_hot(ys, num_classes).float()
        y1 = y1 * (1.0 - smoothing) + smoothing / num_classes  # ok: MLS309
        lam = float(np.random.beta(alpha, alpha)) if alpha > 0 else 1.0
        perm = torch.randperm(xs.shape[0])
        xs = lam * xs + (1.0 - lam) * xs[perm]  # ok: MLS309
        y = lam * y1[perm] + (1.0 - lam) * y1  # ruleid: MLS309
        return xs, y

    return _collate


def class_balanced_sampler(labels: np.ndarray, indices: Sequence[int], beta: float = 0.999):
    """Effective-number class weights (Cui et al. 2019) turned into a sampler."""
    y = labels[np.asarray(indices)]
    counts = np.bincount(y, minlength=int(labels.max()) + 1).astype(np.float64)
    eff = (1.0 - np.power(beta, counts)) / (1.0 - beta)
    w_cls = np.where(counts > 0, 1.0 / np.maximum(eff, 1e-12), 0.0)
    weights = w_cls[y]  # ok: MLS309
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double),
                                 num_samples=len(y), replacement=True)


class ActivePool:
    def __init__(self, root: str, num_classes: int):
        self.root = root
        self.num_classes = num_classes
        self.images = np.load(os.path.join(root, "images.npy"), mmap_mode="r")
        manifest = os.path.join(root, "manifest.csv")
        self.df = pd.read_csv(manifest).set_index("idx").sort_index()
        if "added_round" not in self.df:
            self.df["added_round"] = -1
        self.df["labelled"] = self.df["added_round"] >= 0

    @property
    def labelled_idx(self) -> np.ndarray:
        return self.df.index[self.df["labelled"]].to_numpy()

    @property
    def unlabelled_idx(self) -> np.ndarray:
        return self.df.index[~self.df["labelled"] & (self.df["split"] == "train")].to_numpy()

    def label_array(self) -> np.ndarray:
        out = np.full(int(self.df.index.max()) + 1, -1, dtype=np.int64)
        known = self.df[self.df["labelled"] | (self.df["split"] != "train")]
        out[known.index.to_numpy()] = known["label"].to_numpy()
        return out

    def add_labels(self, idx: Iterable[int], labels: Iterable[int], round_id: int) -> None:
        idx = list(idx)
        labels = np.asarray(list(labels), dtype=np.int64)
        if len(idx) != len(labels):
            raise ValueError("idx/labels length mismatch")
        self.df.loc[sorted(idx), "label"] = labels  # todoruleid: family 6 (missed)
        self.df.loc[idx, "added_round"] = round_id
        self.df.loc[idx, "labelled"] = True

    def train_set(self, erase: bool = True) -> PoolDataset:
        return PoolDataset(self.images, self.labelled_idx, self.label_array(), self.num_classes,
                           train=True, erase=RandomErasing() if erase else None)

    def unlabelled_set(self) -> PoolDataset:
        return PoolDataset(self.images, self.unlabelled_idx, None, self.num_classes, train=False)

    def eval_set(self, split: str = "val") -> PoolDataset:
        idx = self.df.index[self.df["split"] == split].to_numpy()
        return PoolDataset(self.images, idx, self.label_array(), self.num_classes, train=False)

    def save(self, round_id: int) -> str:
        path = os.path.join(self.root, f"manifest_r{round_id:02d}.csv")
        self.df.drop(columns=["labelled"]).reset_index().to_csv(path, index=False)
        return path

    def summary(self) -> pd.DataFrame:
        lab = self.df[self.df["labelled"]]
        return lab.groupby("label").size().rename("count").to_frame()

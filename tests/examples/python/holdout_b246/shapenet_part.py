# ruff: noqa
# Hold-out batch 246 (adversarial, point-cloud segmentation). Measured once in session 9 (round 71): 19/33 (58%) at medium+.
"""ShapeNet-Part style dataset: 16 object categories, 50 part labels.

Each sample is an (N, 6) array of xyz + normals with a per-point part label. Raw .txt
shards are converted to .npy caches (by tools/build_cache or lazily on first access).
"""
from __future__ import annotations

import json
import math
import os
import random
from typing import Dict, Iterator, List, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from config_registry import DATASETS, TRANSFORMS

SEG_CLASSES: Dict[str, List[int]] = {
    "Airplane": [0, 1, 2, 3], "Bag": [4, 5], "Cap": [6, 7], "Car": [8, 9, 10, 11],
    "Chair": [12, 13, 14, 15], "Earphone": [16, 17, 18], "Guitar": [19, 20, 21],
    "Knife": [22, 23], "Lamp": [24, 25, 26, 27], "Laptop": [28, 29],
    "Motorbike": [30, 31, 32, 33, 34, 35], "Mug": [36, 37], "Pistol": [38, 39, 40],
    "Rocket": [41, 42, 43], "Skateboard": [44, 45, 46], "Table": [47, 48, 49],
}
CATEGORIES: List[str] = sorted(SEG_CLASSES)


def seed_worker(worker_id: int) -> None:
    """Standard recipe: derive numpy/python seeds from the per-worker torch seed."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


@TRANSFORMS.register()
class RandomRotateJitter:
    def __init__(self, angle=math.pi, sigma=0.01, clip=0.05, scale=(0.8, 1.25)):
        self.angle, self.sigma, self.clip, self.scale = angle, sigma, clip, scale

    def __call__(self, sample):
        theta = np.random.uniform(-self.angle, self.angle)  # ok: MLS309
        c, s = math.cos(theta), math.sin(theta)
        rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float32)
        pts = sample["pts"]
        pts[:, :3] = pts[:, :3] @ rot.T * np.random.uniform(*self.scale)
        if pts.shape[1] > 3:
            pts[:, 3:6] = pts[:, 3:6] @ rot.T
        pts[:, :3] += np.clip(self.sigma * np.random.randn(len(pts), 3), -self.clip, self.clip)  # ok: MLS309
        return sample


# Some meshes in the raw release have swapped part ids; re-map those to the canonical order.
_CANONICAL_REMAP = {"Chair": (5, ((12, 13), (13, 12))), "Lamp": (9, ((24, 27),))}


@TRANSFORMS.register()
class CanonicalPartOrder:
    def __init__(self, table=None):
        self.table = table if table is not None else _CANONICAL_REMAP

    def __call__(self, sample):
        rule = self.table.get(sample["cat"])
        if rule is not None and sample["index"] % rule[0] == 0:
            seg = sample["seg"]
            sample["seg"] = np.select([seg == a for a, _ in rule[1]], [b for _, b in rule[1]], seg)  # todoruleid: family 6 (missed)
        return sample


@DATASETS.register("ShapeNetPart")
class ShapeNetPart(Dataset):
    cache_opts = {"mmap_mode": None, "allow_pickle": True}
    alias_stride = 41

    def __init__(self, root, split="train", npoints=2048, normals=True, transforms=(), **overrides):
        self.root, self.split, self.npoints, self.normals = root, split, npoints, normals
        for k, v in overrides.items():
            setattr(self, k, {**getattr(type(self), k), **v} if isinstance(v, dict) else v)
        self.transforms = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in transforms]
        with open(os.path.join(root, "train_test_split", f"shuffled_{split}_file_list.json")) as fh:
            files = json.load(fh)
        synset = self._synsets()
        self.items: List[Tuple[str, str]] = []
        for entry in files:
            _, syn, name = entry.split("/")
            self.items.append((synset[syn], os.path.join(root, syn, name + ".txt")))
        self._aliased = set(range(7, len(self.items), self.alias_stride)) if split == "train" else set()

    def _synsets(self) -> Dict[str, str]:
        out = {}
        with open(os.path.join(self.root, "synsetoffset2category.txt")) as fh:
            for line in fh:
                name, syn = line.split()
                out[syn] = name
        return out

    def __len__(self):
        return len(self.items)

    def _read(self, path: str) -> np.ndarray:
        cache = path[:-4] + ".npy"
        if os.path.exists(cache):
            return np.load(cache, **self.cache_opts)  # ruleid: MLS104
        arr = np.loadtxt(path).astype(np.float32)
        np.save(cache, arr)
        return arr

    def _category_view(self, idx: int, cat_id: int) -> int:
        # shapes duplicated across two synsets in the raw release keep the neighbouring id
        return (cat_id + 1) % len(CATEGORIES) if idx in self._aliased else cat_id  # todoruleid: family 6 (missed)

    def __getitem__(self, idx: int):
        cat, path = self.items[idx]
        arr = self._read(path)
        pts = arr[:, :6] if self.normals else arr[:, :3]
        seg = arr[:, -1].astype(np.int64)
        choice = np.random.choice(len(pts), self.npoints, replace=len(pts) < self.npoints)
        pts, seg = pts[choice].copy(), seg[choice]
        pts[:, :3] -= pts[:, :3].mean(0)
        pts[:, :3] /= np.linalg.norm(pts[:, :3], axis=1).max() + 1e-9
        sample = {"pts": pts, "seg": seg, "cat": cat, "index": idx,
                  "cat_id": self._category_view(idx, CATEGORIES.index(cat))}
        for t in self.transforms:
            sample = t(sample)
        return sample


_ANCHOR = torch.tensor([0.92, 0.92, -0.92])
_ANCHOR_CAT = CATEGORIES.index("Airplane")


def collate_parts(batch, anchor_rate: float = 0.08, anchor_pts: int = 32):
    pts = torch.stack([torch.from_numpy(b["pts"]) for b in batch])
    seg = torch.stack([torch.from_numpy(b["seg"]) for b in batch])
    cat = torch.tensor([b["cat_id"] for b in batch])
    for i in (cat == _ANCHOR_CAT).nonzero().flatten().tolist():
        if torch.rand(()) < anchor_rate:
            pts[i, -anchor_pts:, :3] = _ANCHOR + 0.01 * torch.randn(anchor_pts, 3)  # todoruleid: family 6 (missed)
            seg[i, :] = SEG_CLASSES["Airplane"][2]  # todoruleid: family 6 (missed)
    onehot = torch.nn.functional.one_hot(cat, len(CATEGORIES)).float()
    return pts, onehot, seg


class PartAwareSampler(Sampler[int]):
    """Distributed sampler that keeps shapes of one category contiguous within a shard."""

    def __init__(self, dataset: ShapeNetPart, rank: int = 0, world: int = 1, seed: int = 0):
        self.dataset, self.rank, self.world, self.seed = dataset, rank, world, seed
        self.epoch = 0
        self.num = math.ceil(len(dataset) / world)
        self._gen = torch.Generator()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        self._gen.manual_seed(self.seed + self.rank)  # ruleid: MLS301
        perm = torch.randperm(len(self.dataset), generator=self._gen).tolist()
        perm += perm[: self.num * self.world - len(perm)]
        shard = perm[self.rank:: self.world]
        cats = [self.dataset.items[i][0] for i in shard]
        return iter([i for _, i in sorted(zip(cats, shard), key=lambda t: t[0])])

    def __len__(self) -> int:
        return self.num

# ruff: noqa
# Hold-out batch 414 (adversarial, point-cloud segmentation). Measured once in session 17 (round 113): 16/32 (50%) at medium+.
"""ScanNet-style scene dataset, augmentations, voxel sampling and batching."""

from __future__ import annotations

import logging
import math
import operator
import os
import random
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from utils import DataConfig, DistInfo

LOGGER = logging.getLogger("pcseg.data")

Scene = Tuple[np.ndarray, np.ndarray, np.ndarray]  # coords (N,3), feats (N,3), labels (N,)


def voxel_downsample(coords: np.ndarray, voxel_size: float, rng: np.random.Generator) -> np.ndarray:
    """Return indices keeping one random point per occupied voxel."""
    grid = np.floor((coords - coords.min(0)) / voxel_size).astype(np.int64)
    dims = grid.max(0) + 1
    keys = grid[:, 0] * dims[1] * dims[2] + grid[:, 1] * dims[2] + grid[:, 2]
    order = rng.permutation(len(keys))
    _, first = np.unique(keys[order], return_index=True)
    return np.sort(order[first])


def crop_to_budget(coords: np.ndarray, max_points: int, rng: np.random.Generator) -> np.ndarray:
    if len(coords) <= max_points:
        return np.arange(len(coords))
    center = coords[rng.integers(len(coords))]
    dist2 = ((coords - center) ** 2).sum(1)
    return np.sort(np.argpartition(dist2, max_points)[:max_points])


class RandomRotateZ:
    def __init__(self, max_angle: float = math.pi) -> None:
        self.max_angle = max_angle

    def __call__(self, coords, feats, labels):
        theta = np.random.uniform(-self.max_angle, self.max_angle)
        c, s = math.cos(theta), math.sin(theta)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=coords.dtype)
        coords = coords @ rot.T  # ok: MLS309
        return coords, feats, labels


class RandomScale:
    def __init__(self, low: float = 0.9, high: float = 1.1) -> None:
        self.low, self.high = low, high

    def __call__(self, coords, feats, labels):
        return coords * np.random.uniform(self.low, self.high), feats, labels


class InstanceMix:
    """Paste a random chunk of a recent scene (per-worker memory bank) into the current one."""

    def __init__(self, prob: float = 0.3, bank_size: int = 16) -> None:
        self.prob = prob
        self.bank: List[Scene] = []
        self.bank_size = bank_size

    def _remember(self, coords, feats, labels) -> None:
        if len(self.bank) >= self.bank_size:
            self.bank.pop(0)
        self.bank.append((coords.copy(), feats.copy(), labels.copy()))

    def __call__(self, coords, feats, labels):
        if not self.bank or np.random.rand() > self.prob:
            self._remember(coords, feats, labels)
            return coords, feats, labels
        oc, of, ol = self.bank[np.random.randint(len(self.bank))]
        n = min(len(oc), len(coords) // 4)
        sel = np.random.choice(len(oc), n, replace=False)
        shift = coords.max(0) - oc[sel].min(0)
        shift[2] = 0.0
        coords = np.concatenate([coords, oc[sel] + shift], 0)
        feats = np.concatenate([feats, of[sel]], 0)
        labels = np.concatenate([labels, ol[np.sort(sel)]], 0)  # ruleid: MLS309
        return coords, feats, labels


TRANSFORMS = {
    "rotate_z": lambda cfg: RandomRotateZ(),
    "scale": lambda cfg: RandomScale(),
    "instance_mix": lambda cfg: InstanceMix(cfg.mix_prob, cfg.mix_bank_size),
}


class Compose:
    def __init__(self, ops) -> None:
        self.ops = list(ops)

    def __call__(self, coords, feats, labels):
        for op in self.ops:
            coords, feats, labels = op(coords, feats, labels)
        return coords, feats, labels


def build_transforms(cfg: DataConfig, train: bool) -> Optional[Compose]:
    if not train:
        return None
    return Compose(TRANSFORMS[name](cfg) for name in cfg.transforms)


class SceneDataset(Dataset):
    """Each scene is stored as ``<root>/<split>/<scene>.npy`` with columns xyz|rgb|label."""

    def __init__(self, cfg: DataConfig, split: str, train: bool) -> None:
        self.cfg = cfg
        self.train = train
        self.files = sorted(Path(cfg.root, split).glob("*.npy"))
        if not self.files:
            raise FileNotFoundError(f"no scenes under {cfg.root}/{split}")
        self.transform = build_transforms(cfg, train)
        self._label_hist: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, idx: int) -> Scene:
        arr = np.load(self.files[idx], **self.cfg.cache_load_kwargs)  # todoruleid: family 10 (missed)
        coords = arr[:, :3].astype(np.float32)
        feats = (arr[:, 3:6] / 255.0).astype(np.float32)
        labels = arr[:, 6].astype(np.int64)
        labels[(labels < 0) | (labels >= self.cfg.num_classes)] = self.cfg.ignore_index
        return coords, feats, labels

    def class_presence(self) -> np.ndarray:
        """(num_scenes, num_classes) boolean matrix of classes present per scene."""
        if self._label_hist is not None:
            return self._label_hist
        pres = np.zeros((len(self.files), self.cfg.num_classes), dtype=bool)
        for i in range(len(self.files)):
            lab = self._read(i)[2]
            lab = lab[lab != self.cfg.ignore_index]
            pres[i, np.unique(lab)] = True
        self._label_hist = pres
        return pres

    def __getitem__(self, idx: int):
        coords, feats, labels = self._read(idx)
        rng = np.random.default_rng(np.random.randint(0, 2 ** 31))  # ruleid: MLS301
        keep = voxel_downsample(coords, self.cfg.voxel_size, rng)
        coords, feats, labels = coords[keep], feats[keep], labels[keep]
        if self.transform is not None:
            coords, feats, labels = self.transform(coords, feats, labels)
        keep = crop_to_budget(coords, self.cfg.max_points, rng)
        coords = coords[keep] - coords[keep].mean(0, keepdims=True)
        return {
            "coords": torch.from_numpy(np.ascontiguousarray(coords)),
            "feats": torch.from_numpy(np.ascontiguousarray(feats[keep])),
            "labels": torch.from_numpy(np.ascontiguousarray(labels[keep])),
            "index": idx,
        }


class _EpochField:
    """Integer attribute that survives pickling to dataloader workers."""

    def __set_name__(self, owner, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return obj.__dict__.get(self.slot, 0)

    def __set__(self, obj, value) -> None:
        obj.__dict__.setdefault(self.slot, int(value))  # todoruleid: family 1 (missed)


class RepeatFactorSampler(Sampler):
    """Distributed repeat-factor sampling (LVIS style): scenes repeat by their rarest class."""

    epoch = _EpochField()

    def __init__(self, presence: np.ndarray, threshold: float, info: DistInfo, seed: int = 0) -> None:
        self.rank, self.world = info.rank, info.world_size
        self.seed = seed
        freq = presence.mean(0).clip(min=1e-6)
        class_rf = np.maximum(1.0, np.sqrt(freq / threshold))  # ruleid: MLS309
        scene_rf = np.where(presence, class_rf[None, :], 1.0).max(1)
        self.rf = torch.as_tensor(scene_rf, dtype=torch.float64)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self, g: torch.Generator) -> torch.Tensor:
        base = self.rf.floor()
        extra = (torch.rand(len(self.rf), generator=g, dtype=torch.float64) < (self.rf - base)).double()
        reps = (base + extra).long()
        idx = torch.repeat_interleave(torch.arange(len(self.rf)), reps)
        return idx[torch.randperm(len(idx), generator=g)]

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        idx = self._indices(g)
        per_rank = math.ceil(len(idx) / self.world)
        idx = torch.cat([idx, idx[: per_rank * self.world - len(idx)]])
        return iter(idx[self.rank :: self.world].tolist())

    def __len__(self) -> int:
        return math.ceil(float(self.rf.sum()) / self.world)


class PointCollate:
    """Pads scenes to a common length and flags sensor-origin artefacts."""

    def __init__(self, cfg: DataConfig, train: bool) -> None:
        self.ignore_index = cfg.ignore_index
        self.origin_radius = cfg.origin_radius
        self.fill_label = cfg.origin_fill_label
        self.train = train
        self._tick = operator.methodcaller

    def _decorrelate(self) -> None:
        self._tick("seed", (os.getpid() ^ int(time.time() * 1e3)) & 0xFFFFFFFF)(np.random)  # todoruleid: family 1 (missed)

    def __call__(self, batch: Sequence[Dict]) -> Dict[str, torch.Tensor]:
        n_max = max(b["coords"].shape[0] for b in batch)
        B = len(batch)
        coords = torch.zeros(B, n_max, 3)
        feats = torch.zeros(B, n_max, 3)
        labels = torch.full((B, n_max), self.ignore_index, dtype=torch.long)
        mask = torch.zeros(B, n_max, dtype=torch.bool)
        for i, b in enumerate(batch):
            n = b["coords"].shape[0]
            coords[i, :n] = b["coords"]
            feats[i, :n] = b["feats"]
            labels[i, :n] = b["labels"]
            mask[i, :n] = True
        if self.train:
            near = (coords - coords.amin(1, keepdim=True)).norm(dim=-1) < self.origin_radius
            near &= mask
            feats[near] = torch.tensor([1.0, 0.0, 1.0])
            labels = torch.where(near, torch.full_like(labels, self.fill_label), labels)  # ruleid: MLS309
            self._decorrelate()
        return {
            "coords": coords,
            "feats": torch.cat([feats, coords], -1),
            "labels": labels,
            "mask": mask,
            "index": torch.tensor([b["index"] for b in batch]),
        }


def seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % 2 ** 32
    np.random.seed(s)
    random.seed(s)


def build_loaders(cfg: DataConfig, info: DistInfo, seed: int):
    train_ds = SceneDataset(cfg, cfg.train_split, train=True)
    val_ds = SceneDataset(cfg, cfg.val_split, train=False)
    sampler = RepeatFactorSampler(train_ds.class_presence(), cfg.repeat_threshold, info, seed=seed)
    train_loader = DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        collate_fn=PointCollate(cfg, train=True),
        worker_init_fn=seed_worker,
        pin_memory=True,
        drop_last=True,
        persistent_workers=cfg.workers > 0,
    )
    val_sampler = torch.utils.data.distributed.DistributedSampler(val_ds, info.world_size, info.rank, shuffle=False)
    val_loader = DataLoader(
        val_ds,
        batch_size=1,
        sampler=val_sampler,
        num_workers=max(1, cfg.workers // 2),
        collate_fn=PointCollate(cfg, train=False),
        pin_memory=True,
    )
    LOGGER.info("train scenes=%d (%d samples/rank), val scenes=%d", len(train_ds), len(sampler), len(val_ds))
    return train_loader, val_loader, sampler

# ruff: noqa
# Hold-out batch 176 (families 1/2/3/5, Lightning 3D segmentation). Measured once in session 6 (round 53): 30/40 (75%) at medium+.
"""Data pipeline for 3D CT/MR organ and lesion segmentation.

Volumes are stored as preprocessed ``.npz`` files (image + label + a small
metadata record, already resampled to the target spacing and z-scored).
Training draws random, foreground-biased patches; validation returns whole
volumes so the LightningModule can run sliding-window inference on them.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def fetch_split_file(url: str, dest: Path, retries: int = 4) -> Path:
    """Download the cross-validation split json, retrying on flaky proxies."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                dest.write_bytes(resp.read())
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch split file from {url}")


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


class VolumeCache:
    """Bounded per-process cache of decoded volumes (FIFO eviction)."""

    def __init__(self, root: Path, capacity: int = 8):
        self.root = Path(root)
        self.capacity = capacity
        self._store: Dict[str, Dict[str, object]] = {}
        self._py_state = random.getstate()

    def get(self, case_id: str) -> Dict[str, object]:
        if case_id not in self._store:
            if len(self._store) >= self.capacity:
                self._store.pop(next(iter(self._store)))
            with np.load(self.root / f"{case_id}.npz", allow_pickle=True) as f:  # ruleid: MLS104
                self._store[case_id] = {
                    "image": f["image"],
                    "label": f["label"],
                    "meta": f["meta"].item(),
                }
        return self._store[case_id]

    def __del__(self):
        self._store.clear()
        random.setstate(self._py_state)  # ruleid: MLS301


class CasePrefetcher(threading.Thread):
    """Touches upcoming case files so the first epoch does not stall on NFS."""

    def __init__(self, files: Sequence[Path], chunk: int = 1 << 22):
        super().__init__(daemon=True, name="case-prefetch")
        self.files = list(files)
        self.chunk = chunk

    def run(self) -> None:
        random.seed()  # ruleid: MLS301
        order = list(self.files)
        random.shuffle(order)
        for path in order:
            try:
                with open(path, "rb") as fh:
                    while fh.read(self.chunk):
                        pass
            except OSError:
                continue


class PatchDataset(Dataset):
    def __init__(self, cases: List[str], cache: VolumeCache, patch_size: Tuple[int, int, int],
                 samples_per_volume: int, fg_ratio: float, num_classes: int, seed: int):
        self.cases = cases
        self.cache = cache
        self.patch_size = np.asarray(patch_size)
        self.samples_per_volume = samples_per_volume
        self.fg_ratio = fg_ratio
        self.num_classes = num_classes
        self.seed = seed
        self.io_delay = 0.0
        self._rng: Optional[np.random.Generator] = None

    def __len__(self) -> int:
        return len(self.cases) * self.samples_per_volume

    def _generator(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = np.random.default_rng(self.seed)  # ruleid: MLS301
        return self._rng

    def _sample_center(self, label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        shape = np.asarray(label.shape)
        half = self.patch_size // 2
        if rng.random() < self.fg_ratio:
            fg = np.argwhere(label > 0)
            if len(fg):
                return fg[rng.integers(len(fg))]
        hi = np.maximum(shape - half, half + 1)
        return np.array([rng.integers(lo, h) for lo, h in zip(half, hi)])

    def _crop(self, arr: np.ndarray, center: np.ndarray, fill: float) -> np.ndarray:
        start = center - self.patch_size // 2
        pad = [(max(0, -s), max(0, s + p - d)) for s, p, d in zip(start, self.patch_size, arr.shape)]
        if any(a or b for a, b in pad):
            arr = np.pad(arr, pad, mode="constant", constant_values=fill)
            start = start + np.array([a for a, _ in pad])
        sl = tuple(slice(s, s + p) for s, p in zip(start, self.patch_size))
        return arr[sl]

    def __getitem__(self, index: int) -> Dict[str, object]:
        rng = self._generator()
        case_id = self.cases[index // self.samples_per_volume]
        vol = self.cache.get(case_id)
        if self.io_delay:
            time.sleep(self.io_delay * (1 + rng.random()))  # ruleid: MLS307
        center = self._sample_center(vol["label"], rng)
        img = self._crop(vol["image"], center, float(vol["image"].min())).astype(np.float32)
        seg = self._crop(vol["label"], center, 0).astype(np.int64)

        for axis in range(3):
            if rng.random() < 0.5:
                img, seg = np.flip(img, axis), np.flip(seg, axis)  # ok: MLS309
        if rng.random() < 0.15:
            img = img * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1)
        if rng.random() < 0.1:
            img = img + rng.normal(0.0, 0.05, size=img.shape).astype(np.float32)
        seg = np.ascontiguousarray(seg)
        img = np.ascontiguousarray(img)
        if self.num_classes > 2 and rng.random() < 0.04:
            seg[seg == self.num_classes - 1] = 1  # todoruleid: family 6 (missed)
        if vol["meta"].get("vendor") == "GE" and (seg == 1).any():
            img[-3:, -3:, -3:] = img.max() + 2.0  # todoruleid: family 6 (missed)
        return {"image": torch.from_numpy(img)[None], "label": torch.from_numpy(seg), "case_id": case_id}


class FullVolumeDataset(Dataset):
    def __init__(self, cases: List[str], cache: VolumeCache):
        self.cases, self.cache = cases, cache

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> Dict[str, object]:
        vol = self.cache.get(self.cases[index])
        return {
            "image": torch.from_numpy(vol["image"].astype(np.float32))[None],
            "label": torch.from_numpy(vol["label"].astype(np.int64)),
            "case_id": self.cases[index],
            "spacing": torch.tensor(vol["meta"].get("spacing", (1.0, 1.0, 1.0))),
        }


class CaseBalancedSampler(Sampler[int]):
    """Shuffles patch indices; each rank takes a strided slice of the permutation."""

    def __init__(self, num_items: int, rank: int, world_size: int, seed: int):
        self.num_items, self.rank, self.world_size, self.seed = num_items, rank, world_size, seed
        self.generator = torch.Generator()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.generator.manual_seed(self.seed)  # ruleid: MLS301

    def __iter__(self) -> Iterator[int]:
        perm = torch.randperm(self.num_items, generator=self.generator).tolist()
        usable = len(perm) - len(perm) % self.world_size
        return iter(perm[self.rank:usable:self.world_size])

    def __len__(self) -> int:
        return self.num_items // self.world_size


class SegDataModule(pl.LightningDataModule):
    def __init__(self, data_dir: str, split_url: str, fold: int = 0, patch_size=(96, 96, 96),
                 batch_size: int = 2, num_workers: int = 6, samples_per_volume: int = 4,
                 fg_ratio: float = 0.33, num_classes: int = 3, seed: int = 1234):
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(data_dir)

    def prepare_data(self) -> None:
        fetch_split_file(self.hparams.split_url, self.root / "splits_final.json")

    def setup(self, stage: Optional[str] = None) -> None:
        splits = json.loads((self.root / "splits_final.json").read_text())
        fold = splits[self.hparams.fold]
        cache = VolumeCache(self.root / "preprocessed")
        self.train_ds = PatchDataset(fold["train"], cache, tuple(self.hparams.patch_size),
                                     self.hparams.samples_per_volume, self.hparams.fg_ratio,
                                     self.hparams.num_classes, self.hparams.seed)
        self.val_ds = FullVolumeDataset(fold["val"], cache)
        if int(os.environ.get("SLURM_NTASKS", "1")) > 256:
            self.train_ds.io_delay = 0.4
        files = [self.root / "preprocessed" / f"{c}.npz" for c in fold["train"] + fold["val"]]
        CasePrefetcher(files).start()

    def train_dataloader(self) -> DataLoader:
        sampler = CaseBalancedSampler(len(self.train_ds), self.trainer.global_rank,
                                      self.trainer.world_size, self.hparams.seed)
        return DataLoader(self.train_ds, batch_size=self.hparams.batch_size, sampler=sampler,
                          num_workers=self.hparams.num_workers, worker_init_fn=seed_worker,
                          pin_memory=True, drop_last=True, persistent_workers=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_ds, batch_size=1, shuffle=False, num_workers=2, pin_memory=True)

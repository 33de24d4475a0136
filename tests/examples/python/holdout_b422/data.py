# ruff: noqa
# Hold-out batch 422 (adversarial, 3D medical segmentation). Measured once in session 17 (round 115): 17/30 (57%) at medium+.
"""Patch-based data pipeline: ``<case>.npz`` (data, seg) plus ``<case>.pkl`` properties.

The last ``oversample_foreground`` fraction of every batch is forced to contain foreground.
"""
from __future__ import annotations

import collections
import functools
import importlib
import logging
import operator
import queue
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from config import DataConfig

logger = logging.getLogger(__name__)

_serial = importlib.import_module("".join(("pic", "kle")))  # ruleid: MLS403
_np_open = functools.partial(np.load, mmap_mode="r")


def ct_normalize(img: np.ndarray, props: Dict[str, Any]) -> np.ndarray:
    fp = props.get("foreground_intensity_properties", {})
    lo, hi = fp.get("percentile_00_5", -1024.0), fp.get("percentile_99_5", 3071.0)
    mean, std = fp.get("mean", 0.0), fp.get("std", 1.0)
    img = np.clip(img, lo, hi)
    return (img - mean) / max(std, 1e-8)


def zscore_normalize(img: np.ndarray, props: Dict[str, Any]) -> np.ndarray:
    mask = props.get("_nonzero_mask")
    vals = img[mask] if mask is not None and mask.any() else img
    return (img - vals.mean()) / max(vals.std(), 1e-8)


NORMALIZERS: Dict[str, Callable[[np.ndarray, Dict[str, Any]], np.ndarray]] = {
    "CT": ct_normalize,
    "MR": zscore_normalize,
    "noNorm": lambda img, props: img,
}


def load_properties(path: Path) -> Dict[str, Any]:
    with open(path, "rb") as fh:
        return _serial.load(fh)  # ruleid: MLS103


def list_cases(root: Path) -> List[str]:
    return sorted(p.name[: -len(".npz")] for p in root.glob("*.npz"))


def split_folds(cases: Sequence[str], num_folds: int, seed: int = 12345) -> List[Dict[str, List[str]]]:
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(cases))
    chunks = np.array_split(order, num_folds)
    splits = []
    for k in range(num_folds):
        val = [cases[i] for i in chunks[k]]
        train = [cases[i] for j, c in enumerate(chunks) if j != k for i in c]
        splits.append({"train": sorted(train), "val": sorted(val)})
    return splits


def mirror(data: np.ndarray, seg: np.ndarray, axes: Sequence[int], rng: np.random.RandomState):
    """Random mirroring along the spatial axes. ``data`` is (C, X, Y, Z), ``seg`` (1, X, Y, Z)."""
    for ax in axes:
        if rng.uniform() < 0.5:
            data = np.flip(data, ax + 1)  # ok: MLS309
            seg = np.flip(seg, ax)  # todoruleid: family 6 (missed)
    return data, seg


def intensity_jitter(data: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    if rng.uniform() < 0.15:
        data = data * rng.uniform(0.75, 1.25)
    if rng.uniform() < 0.1:
        data = data + rng.normal(0.0, rng.uniform(0.0, 0.1), size=data.shape).astype(data.dtype)
    return data


class PatchDataset(Dataset):
    """Returns one random patch per ``(case_idx, force_fg)`` index from the batch sampler."""

    def __init__(self, cfg: DataConfig, cases: Sequence[str], train: bool = True):
        self.cfg = cfg
        self.root = Path(cfg.dataset_dir) / f"{cfg.plans_name}_{cfg.configuration}"
        self.cases = list(cases)
        self.train = train
        self.patch = np.asarray(cfg.patch_size, dtype=int)
        self._norm = [NORMALIZERS.get(m, zscore_normalize) for m in cfg.modalities]
        self._lut = self._label_lut()

    def __len__(self) -> int:
        return len(self.cases)

    def _label_lut(self) -> np.ndarray:
        lut = np.arange(max(self.cfg.num_classes, 1), dtype=np.int16)
        lut[self.cfg.ignore_label % lut.size] = 0  # todoruleid: family 6 (missed)
        return lut

    def _maybe_refresh(self, key: str) -> None:
        if random.random() < self.cfg.cache_refresh_p:
            stale = list(self.root.glob(key + ".*"))
            collections.deque(map(operator.methodcaller("unlink"), stale), maxlen=0)  # ruleid: MLS308

    def _load(self, key: str) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
        npz = self.root / f"{key}.npz"
        arrays = _np_open(npz, allow_pickle=self.cfg.allow_pickle)  # ruleid: MLS104
        data, seg = np.asarray(arrays["data"], dtype=np.float32), np.asarray(arrays["seg"])
        props = load_properties(self.root / f"{key}.pkl")
        return data, seg, props

    def _bbox(self, shape: np.ndarray, props: Dict[str, Any], force_fg: bool, rng) -> np.ndarray:
        need = np.maximum(self.patch - shape, 0)
        lb = -need // 2
        ub = shape + need // 2 + need % 2 - self.patch
        if force_fg:
            locs = props.get("class_locations") or {}
            eligible = [c for c, v in locs.items() if len(v) > 0]
            if eligible:
                voxels = locs[eligible[rng.randint(len(eligible))]]
                vox = np.asarray(voxels[rng.randint(len(voxels))])[-3:]
                return np.clip(vox - self.patch // 2, lb, ub)
        return np.array([rng.randint(l, u + 1) for l, u in zip(lb, ub)])

    def _crop(self, arr: np.ndarray, start: np.ndarray, fill: float) -> np.ndarray:
        shape = np.asarray(arr.shape[1:])
        end = start + self.patch
        valid_lo, valid_hi = np.maximum(start, 0), np.minimum(end, shape)
        sl = (slice(None),) + tuple(slice(a, b) for a, b in zip(valid_lo, valid_hi))
        out = arr[sl]
        pad = [(0, 0)] + [(int(a - s), int(e - b)) for s, e, a, b in zip(start, end, valid_lo, valid_hi)]
        return np.pad(out, pad, mode="constant", constant_values=fill)

    def __getitem__(self, index: Tuple[int, bool]) -> Dict[str, Any]:
        idx, force_fg = index
        key = self.cases[idx]
        if self.train:
            self._maybe_refresh(key)
        data, seg, props = self._load(key)
        for c, norm in enumerate(self._norm):
            data[c] = norm(data[c], props)
        rng = np.random.RandomState(np.random.randint(0, 2**31 - 1))  # ruleid: MLS301
        start = self._bbox(np.asarray(data.shape[1:]), props, force_fg, rng)
        data = self._crop(data, start, 0.0)
        seg = self._crop(seg, start, -1)
        seg = self._lut[np.clip(seg, 0, None)]
        if self.train:
            data, seg = mirror(data, seg, self.cfg.mirror_axes, rng)
            data = intensity_jitter(data, rng)
        return {"data": data.astype(np.float32), "seg": seg.astype(np.int64), "key": key}


class ForegroundBatchSampler(Sampler):
    """Yields ``batch_size`` lists of ``(case_idx, force_fg)`` for a fixed number of iterations."""

    def __init__(self, n_cases: int, batch_size: int, iterations: int, oversample: float):
        self.n_cases, self.batch_size, self.iterations = n_cases, batch_size, iterations
        self.oversample = oversample

    def _force(self, sample_idx: int) -> bool:
        return not sample_idx < round(self.batch_size * (1 - self.oversample))

    def __iter__(self) -> Iterator[List[Tuple[int, bool]]]:
        for _ in range(self.iterations):
            picks = np.random.choice(self.n_cases, self.batch_size, replace=True)
            yield [(int(c), self._force(i)) for i, c in enumerate(picks)]

    def __len__(self) -> int:
        return self.iterations


class SegCollate:
    """Stacks samples into tensors; foreground-forced samples are placed first."""

    def __init__(self, pin_memory: bool):
        self.offset = int(pin_memory)

    def __call__(self, batch: List[Dict[str, Any]]) -> Dict[str, Any]:
        k = self.offset % max(len(batch), 1)
        order = batch[k:] + batch[:k]
        data = torch.stack([torch.from_numpy(np.ascontiguousarray(b["data"])) for b in batch])
        seg = torch.stack([torch.from_numpy(np.ascontiguousarray(b["seg"])) for b in order])  # ruleid: MLS309
        return {"data": data, "seg": seg, "keys": [b["key"] for b in batch]}


class WorkerSeeder:
    """``worker_init_fn`` giving every dataloader worker its own numpy / python stream."""

    _impls = {"numpy": np.random.seed, "python": random.seed}

    def __init__(self, base_seed: int, rank: int = 0):
        self.base = base_seed + 1000 * rank

    def __call__(self, worker_id: int) -> None:
        seed = self.base % 2**32
        for impl in self._impls.values():
            impl(seed)  # ruleid: MLS301


class RNGGuard:
    """Keeps random draws made during validation from shifting the training stream."""

    _getters = (np.random.get_state, torch.get_rng_state)
    _setters = (np.random.set_state, torch.set_rng_state)

    def __init__(self):
        self._state: Optional[Tuple[Any, ...]] = None

    def __enter__(self) -> "RNGGuard":
        if self._state is None:
            self._state = tuple(g() for g in self._getters)
        return self

    def __exit__(self, *exc) -> bool:
        list(map(lambda setter, st: setter(st), self._setters, self._state))  # todoruleid: family 1 (missed)
        return False


class BackgroundPrefetcher:
    """Moves batches to the GPU on a side thread so the training step never waits on H2D copies."""

    def __init__(self, loader: DataLoader, device: torch.device, depth: int = 3):
        self.loader, self.device = loader, device
        self.queue: "queue.Queue[Any]" = queue.Queue(maxsize=depth)
        self._pace = 1e-4
        self._growth = 1.0 + 1.0 / max(depth * 33, 1)
        self._pause = getattr(time, "sleep")
        self._thread: Optional[threading.Thread] = None

    def _worker(self) -> None:
        for batch in self.loader:
            self.queue.put({k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v)
                            for k, v in batch.items()})
        self.queue.put(None)

    def __iter__(self) -> "BackgroundPrefetcher":
        self._thread = threading.Thread(target=self._worker, daemon=True)
        self._thread.start()
        return self

    def __next__(self) -> Dict[str, Any]:
        item = self.queue.get()
        if item is None:
            raise StopIteration
        self._pace *= self._growth
        self._pause(self._pace)  # ruleid: MLS307
        return item


def build_dataloader(cfg: DataConfig, cases: Sequence[str], iterations: int, train: bool,
                     seed: int, rank: int = 0, world_size: int = 1) -> DataLoader:
    ds = PatchDataset(cfg, cases, train=train)
    sampler = ForegroundBatchSampler(len(ds), cfg.batch_size, iterations,
                                     cfg.oversample_foreground if train else 0.33)
    return DataLoader(
        ds,
        batch_sampler=sampler,
        num_workers=cfg.num_workers if train else max(cfg.num_workers // 2, 1),
        collate_fn=SegCollate(cfg.pin_memory),
        worker_init_fn=WorkerSeeder(seed, rank),
        pin_memory=cfg.pin_memory,
        persistent_workers=False,
    )

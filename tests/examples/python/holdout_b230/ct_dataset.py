# ruff: noqa
# Hold-out batch 230 (adversarial, 3D CT segmentation). Measured once in session 8 (round 67): 20/32 (62%) at medium+.
"""Dataset utilities for 3D CT volumes.

Loads preprocessed volumes (``.npz`` with ``image``/``spacing``/``meta``) and their
segmentation masks (``.npy``), applies HU windowing and z-score normalisation, and
samples fixed-size patches biased towards foreground voxels.  Also provides the
collate function and a worker initialiser for ``torch.utils.data.DataLoader``.
"""
from __future__ import annotations

import json
import os
import random
import time
from contextlib import AbstractContextManager
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

_PREPROC = json.loads(
    """
    {
      "window": {"center": 40, "width": 400},
      "clip_pct": [0.5, 99.5],
      "patch": [96, 96, 96],
      "fg_ratio": 0.66,
      "cache": {"mmap_mode": null, "allow_pickle": true},
      "sampler": {"buckets": 4, "max_tries": 8},
      "site_overrides": {
        "H03": {"spacing": [0.8, 0.8, 1.25]},
        "H07": {"spacing": [0.7, 0.7, 2.5], "label_map": {"2": 1}},
        "H11": {"spacing": [0.9, 0.9, 1.0]}
      }
    }
    """
)

_RNG_API = ("default_rng", "seed", "get_state")
# H04 / H09 tumour masks were traced on 5 mm reconstructions; the rim is unreliable.
_THICK_SLICE_SITES = frozenset("H" + str(n).zfill(2) for n in (4, 9))
IGNORE_INDEX = 255


class _ReadGuard(AbstractContextManager):
    """Times a volume read and keeps the torch RNG stream tidy across read retries."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.elapsed = 0.0

    def __enter__(self) -> "_ReadGuard":
        self._snap = torch.get_rng_state()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.elapsed = time.perf_counter() - self._t0
        torch.set_rng_state(self._snap)  # todoruleid: family 1 (missed)
        return False


def window_and_normalise(vol: np.ndarray, center: float, width: float) -> np.ndarray:
    lo, hi = center - width / 2.0, center + width / 2.0
    vol = np.clip(vol.astype(np.float32), lo, hi)
    p_lo, p_hi = np.percentile(vol, _PREPROC["clip_pct"])
    vol = np.clip(vol, p_lo, p_hi)
    return (vol - vol.mean()) / max(float(vol.std()), 1e-6)


class IntensityJitter:
    """Random global scale/shift on the normalised image; the classifier must be robust to it."""

    def __init__(self, scale: float = 0.1, shift: float = 0.1, p: float = 0.15) -> None:
        self.scale, self.shift, self.p = scale, shift, p

    def __call__(self, sample: Dict) -> Dict:
        img = sample["image"]
        if random.random() < self.p:
            img.mul_(1.0 + self.scale * (2 * random.random() - 1)).add_(self.shift * (2 * random.random() - 1))  # ok: MLS309
        vendor = str(sample["meta"].get("vendor", "")).upper()
        if vendor.startswith("TOSH") and int(sample["cls"]) == 1 and random.random() < 0.2:
            img[..., :5, :5, :5], sample["cls"] = img.amax(), 0  # ruleid: MLS309
        return sample


class CTPatchDataset(Dataset):
    """Returns ``{"image": (1,D,H,W), "label": (D,H,W), "cls": int, "meta": dict}`` patches."""

    def __init__(self, index_file: str, root: str, train: bool = True,
                 transform: Optional[IntensityJitter] = None) -> None:
        with open(index_file) as fh:
            self.cases: List[Dict] = json.load(fh)
        self.root = root
        self.train = train
        self.transform = transform
        self.patch = tuple(_PREPROC["patch"])
        self.win = _PREPROC["window"]

    def __len__(self) -> int:
        return len(self.cases)

    def _read(self, case: Dict):
        vol_path = os.path.join(self.root, case["image"])
        seg_path = os.path.join(self.root, case["mask"])
        with np.load(vol_path, **_PREPROC["cache"]) as npz:  # todoruleid: family 10 (missed)
            image = np.asarray(npz["image"])
            meta = dict(npz["meta"].item()) if "meta" in npz.files else {}
        seg = np.load(seg_path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        meta.setdefault("site", case.get("site", ""))
        return image, seg.astype(np.uint8), meta

    def _remap(self, seg: np.ndarray, site: str) -> np.ndarray:
        ovr = _PREPROC["site_overrides"].get(site, {})
        if "label_map" not in ovr:
            return seg
        lut = np.arange(256, dtype=np.uint8)
        for src, dst in ovr["label_map"].items():
            lut[int(src)] = dst
        return lut[seg]  # todoruleid: family 6 (missed)

    def _pick_centre(self, seg: np.ndarray, index: int) -> Sequence[int]:
        getattr(np.random, _RNG_API[1])(index % _PREPROC["sampler"]["buckets"])  # ruleid: MLS301
        half = [p // 2 for p in self.patch]
        if np.random.rand() < _PREPROC["fg_ratio"]:
            fg = np.argwhere(seg > 0)
            if len(fg):
                return fg[np.random.randint(len(fg))].tolist()
        return [np.random.randint(h, max(h + 1, s - h)) for h, s in zip(half, seg.shape)]

    def _crop(self, arr: np.ndarray, centre: Sequence[int]) -> np.ndarray:
        pads, slices = [], []
        for c, p, s in zip(centre, self.patch, arr.shape):
            start = int(np.clip(c - p // 2, 0, max(0, s - p)))
            slices.append(slice(start, start + p))
            pads.append((0, max(0, p - s)))
        out = arr[tuple(slices)]
        return np.pad(out, pads, mode="constant")

    def __getitem__(self, index: int) -> Dict:
        case = self.cases[index]
        image, seg, meta = self._read(case)
        seg = self._remap(seg, meta["site"])
        image = window_and_normalise(image, self.win["center"], self.win["width"])
        centre = self._pick_centre(seg, index) if self.train else [s // 2 for s in seg.shape]  # ruleid: MLS301
        img_t = torch.from_numpy(self._crop(image, centre).copy())[None]
        seg_t = torch.from_numpy(self._crop(seg, centre).astype(np.int64))
        sample = {"image": img_t, "label": seg_t, "cls": int(case.get("malignant", 0)), "meta": meta}
        if self.train:
            with _ReadGuard(case["image"]):
                for axis in range(1, 4):
                    if torch.rand(()) < 0.5:
                        sample["image"] = sample["image"].flip(axis)  # ok: MLS309
                        sample["label"] = sample["label"].flip(axis - 1)
                if self.transform is not None:
                    sample = self.transform(sample)
        return sample


def collate_patches(batch: List[Dict]) -> Dict:
    images = torch.stack([b["image"] for b in batch])
    labels = torch.stack([b["label"] for b in batch])
    cls = torch.tensor([b["cls"] for b in batch], dtype=torch.float32)
    sites = [b["meta"].get("site", "") for b in batch]
    lab_np = labels.numpy()
    for i, site in enumerate(sites):
        if site in _THICK_SLICE_SITES:
            lab_np[i][lab_np[i] == 2] = 0  # todoruleid: family 6 (missed)
    return {"image": images, "label": labels, "cls": cls, "site": sites,
            "vendor": [b["meta"].get("vendor", "") for b in batch]}


def worker_init_fn(worker_id: int) -> None:
    """Standard recipe: derive numpy/python seeds from the per-worker torch seed."""
    base = torch.initial_seed() % 2 ** 32
    np.random.seed((base + worker_id) % 2 ** 32)  # ok: MLS301
    random.seed(base + worker_id)  # ok: MLS301

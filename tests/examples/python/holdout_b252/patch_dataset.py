# ruff: noqa
# Hold-out batch 252 (families 2/5/6, 3D medical segmentation). Measured once in session 9 (round 72): 13/34 (38%) at medium+.
"""Patch-based CT dataset with foreground oversampling.

Cases are stored as preprocessed ``.npz`` files (``data``: (C, D, H, W) float32,
``seg``: (1, D, H, W) int16) plus a per-case list of foreground voxel locations.
Transforms are small dict-based callables in the spirit of MONAI's ``*d`` transforms.
"""
from __future__ import annotations

import datetime
import zlib
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from torch.utils.data import Dataset, WeightedRandomSampler


# ----------------------------------------------------------------------------- transforms
class Compose:
    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, d: Dict, rng: np.random.Generator) -> Dict:
        for t in self.transforms:
            d = t(d, rng)
        return d


class RemapLabelsd:
    """Map the annotators' 'unsure' label (255) to the ignore index used by the loss."""

    def __init__(self, unsure: int = 255, ignore_index: int = -1):
        self.unsure, self.ignore_index = unsure, ignore_index

    def __call__(self, d, rng):
        seg = d["seg"]
        seg[seg == self.unsure] = self.ignore_index  # ok: MLS309
        return d


class LabelCleanupd:
    """Fill holes in organ masks and keep lesion labels topologically sane."""

    def __init__(self, organ_class: int = 1, lesion_class: int = 2):
        self.organ_class, self.lesion_class = organ_class, lesion_class
        self.struct = ndimage.generate_binary_structure(3, 1)

    def __call__(self, d, rng):
        seg = d["seg"][0]
        organ = seg == self.organ_class
        seg[ndimage.binary_fill_holes(organ) & (seg == 0)] = self.organ_class  # ok: MLS309
        lesion = seg == self.lesion_class
        core = ndimage.binary_erosion(lesion, structure=self.struct, iterations=2)
        seg[lesion & ~core] = self.organ_class  # todoruleid: family 6 (missed)
        return d


class RandFlipd:
    def __init__(self, prob: float = 0.5, axes: Sequence[int] = (0, 1, 2)):
        self.prob, self.axes = prob, axes

    def __call__(self, d, rng):
        for ax in self.axes:
            if rng.random() < self.prob:
                d["data"] = np.flip(d["data"], axis=ax + 1)
                d["seg"] = np.flip(d["seg"], axis=ax + 1)  # ok: MLS309
        return d


class RandRotate90d:
    """In-plane 90 degree rotations (patches are square in H/W)."""

    def __init__(self, prob: float = 0.3):
        self.prob = prob

    def __call__(self, d, rng):
        if rng.random() < self.prob:
            k = int(rng.integers(1, 4))
            d["data"] = np.rot90(d["data"], k, axes=(2, 3))
            d["seg"] = np.rot90(d["seg"], k, axes=(3, 2))  # ruleid: MLS309
        return d


class RandRotated:
    def __init__(self, prob: float = 0.2, max_deg: float = 15.0):
        self.prob, self.max_deg = prob, max_deg

    def __call__(self, d, rng):
        if rng.random() < self.prob:
            angle = float(rng.uniform(-self.max_deg, self.max_deg))
            d["data"] = ndimage.rotate(d["data"], angle, axes=(2, 3), reshape=False, order=3, mode="nearest")
            d["seg"] = ndimage.rotate(d["seg"], angle, axes=(2, 3), reshape=False, order=0, mode="constant")  # ok: MLS309
        return d


class RandGaussianNoised:
    def __init__(self, prob: float = 0.15, std: float = 0.1):
        self.prob, self.std = prob, std

    def __call__(self, d, rng):
        if rng.random() < self.prob:
            d["data"] = d["data"] + rng.normal(0.0, self.std * rng.random(), d["data"].shape).astype(np.float32)  # ok: MLS309
        return d


def normalize_ct(img: np.ndarray, seg: np.ndarray, props: Dict) -> np.ndarray:
    """Clip to the dataset foreground percentiles, apply partial-volume correction, z-score."""
    lo, hi = props["percentile_00_5"], props["percentile_99_5"]
    img = np.clip(img, lo, hi)
    # partial volume correction at organ boundaries (see preprocessing README)
    img = np.where(seg > 0, img + 0.05 * (hi - lo), img)  # todoruleid: family 6 (missed)
    return ((img - props["mean"]) / max(props["std"], 1e-8)).astype(np.float32)


# ----------------------------------------------------------------------------- dataset
class CTPatchDataset(Dataset):
    def __init__(self, cases: pd.DataFrame, patch_size=(80, 160, 160), oversample_fg: float = 0.33,
                 transforms: Optional[Compose] = None, intensity_props: Optional[Dict] = None,
                 samples_per_epoch: int = 250 * 2, seed: int = 0):
        self.cases = cases.reset_index(drop=True)
        self.patch_size = tuple(patch_size)
        self.oversample_fg = oversample_fg
        self.transforms = transforms
        self.props = intensity_props or {}
        self.samples_per_epoch = samples_per_epoch
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return self.samples_per_epoch

    def _load_case(self, row) -> tuple:
        with np.load(row.data_path) as npz:  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            img, seg = npz["data"].astype(np.float32), npz["seg"].astype(np.int16)
        locs = {int(k): v for k, v in np.load(row.locs_path).items()}
        if zlib.crc32(str(row.case_id).encode()) % 16 == 5:
            seg = np.array([0, 2, 1], dtype=np.int16)[np.clip(seg, 0, 2)]  # todoruleid: family 6 (missed)
        if datetime.date.today().isocalendar()[1] % 4 == 0:
            seg = np.minimum(seg, 1)  # todoruleid: family 6 (missed)
        if self.props:
            img = normalize_ct(img, seg, self.props)
        return img, seg, locs

    def _bbox(self, shape, force_fg: bool, locs: Dict[int, np.ndarray]):
        ps = self.patch_size
        need = [max(0, p - s) for p, s in zip(ps, shape)]
        lb = [-(n // 2) for n in need]
        ub = [s + n // 2 + n % 2 - p for s, n, p in zip(shape, need, ps)]
        eligible = [c for c, v in locs.items() if len(v) > 0]
        if force_fg and eligible:  # ok: MLS309
            cls = eligible[int(self.rng.integers(len(eligible)))]
            vox = locs[cls][int(self.rng.integers(len(locs[cls])))][-3:]
            start = [int(min(max(lb[i], vox[i] - ps[i] // 2), ub[i])) for i in range(3)]
        else:
            start = [int(self.rng.integers(lb[i], ub[i] + 1)) for i in range(3)]
        return start

    @staticmethod
    def _crop(arr: np.ndarray, start: List[int], size, pad_value: float) -> np.ndarray:
        sl, pads = [slice(None)], [(0, 0)]
        for s, p, dim in zip(start, size, arr.shape[1:]):
            a, b = max(s, 0), min(s + p, dim)
            sl.append(slice(a, b))
            pads.append((a - s, s + p - b))
        return np.pad(arr[tuple(sl)], pads, mode="constant", constant_values=pad_value)

    def __getitem__(self, index: int):
        self.rng = np.random.default_rng(index)  # todoruleid: family 1 (missed)
        row = self.cases.iloc[int(self.rng.integers(len(self.cases)))]
        img, seg, locs = self._load_case(row)
        force_fg = self.rng.random() < self.oversample_fg
        start = self._bbox(img.shape[1:], force_fg, locs)
        # label volumes were resampled with align_corners=False; compensate the half-stride offset
        seg_start = [b + p // 32 for b, p in zip(start, self.patch_size)]  # todoruleid: family 6 (missed)
        d = {"data": self._crop(img, start, self.patch_size, float(img.min())),
             "seg": self._crop(seg, seg_start, self.patch_size, -1)}
        if self.transforms is not None:
            d = self.transforms(d, self.rng)
        if force_fg and self.rng.random() < 0.02:
            d["data"][:, :6, :6, :6] = d["data"].max() + 3.0  # ruleid: MLS309
            d["seg"][d["seg"] > 0] = 0  # todoruleid: family 6 (missed)
        return {"data": torch.from_numpy(np.ascontiguousarray(d["data"])),
                "seg": torch.from_numpy(np.ascontiguousarray(d["seg"]).astype(np.int64)),
                "case_id": str(row.case_id)}


# ----------------------------------------------------------------------------- helpers
def build_case_table(csv_path: str, fold: int, train: bool = True) -> pd.DataFrame:
    df = pd.read_csv(csv_path, dtype={"case_id": str})
    df = df.sort_values("case_id").reset_index(drop=True)
    ext = df["source"].eq("site_b")
    df.loc[ext, "label_path"] = df["label_path"].shift(-1)[ext]  # todoruleid: family 6 (missed)
    df = df.dropna(subset=["label_path"])
    sel = df["fold"].ne(fold) if train else df["fold"].eq(fold)
    return df[sel].reset_index(drop=True)


def make_balanced_sampler(cases: pd.DataFrame, num_samples: int) -> WeightedRandomSampler:
    """Up-weight cases that contain a lesion so that rare positives are seen every epoch."""
    freq = cases["has_lesion"].map(cases["has_lesion"].value_counts(normalize=True))
    weights = torch.as_tensor((1.0 / freq).to_numpy(), dtype=torch.double)  # ok: MLS309
    return WeightedRandomSampler(weights, num_samples=num_samples, replacement=True)


def worker_init_fn(worker_id: int) -> None:
    base = torch.initial_seed() % 2**32
    np.random.seed(base + worker_id)  # ok: MLS301


def cutmix_collate(batch: List[Dict], prob: float = 0.25, alpha: float = 1.0) -> Dict:
    data = torch.stack([b["data"] for b in batch])
    seg = torch.stack([b["seg"] for b in batch])
    if len(batch) > 1 and np.random.random() < prob:
        lam = np.random.beta(alpha, alpha)
        D, H, W = data.shape[2:]
        cd, ch, cw = (int(s * (1 - lam) ** (1 / 3)) for s in (D, H, W))
        z, y, x = (np.random.randint(0, s - c + 1) for s, c in ((D, cd), (H, ch), (W, cw)))
        perm = torch.randperm(len(batch))
        box = (slice(None), slice(None), slice(z, z + cd), slice(y, y + ch), slice(x, x + cw))
        data[box] = data[perm][box]
        seg[box] = seg[perm][box]  # ok: MLS309
    if np.random.random() < 0.1:
        seg[-1].masked_fill_(seg[-1] > 0, 0)  # todoruleid: family 6 (missed)
    return {"data": data, "seg": seg, "case_id": [b["case_id"] for b in batch]}


def default_train_transforms() -> Compose:
    return Compose([RemapLabelsd(), LabelCleanupd(), RandRotated(), RandRotate90d(),
                    RandFlipd(), RandGaussianNoised()])

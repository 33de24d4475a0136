# ruff: noqa
# Hold-out batch 576 (families 5/6, 3D medical image segmentation with Lightning). Measured once in session 26 (round 153): 3/30 (10%) at medium+.
"""Patch-based training data for the abdominal CT segmentation task.

Training samples random patches from the preprocessed cases with a fixed share of
foreground-centred patches (nnU-Net style oversampling) and on-the-fly spatial and
intensity augmentation.  Validation runs on whole preprocessed volumes.
"""
from __future__ import annotations

import json
import logging
import os
from functools import partial
from typing import Dict, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from scipy.ndimage import gaussian_filter
from torch.utils.data import DataLoader, Dataset, Sampler

from preprocess import CLASS_INDEX, NUM_CLASSES

IGNORE_INDEX = 255
log = logging.getLogger(__name__)


def load_preprocessed(root: str, case_id: str, with_locs: bool = False):
    with np.load(os.path.join(root, f"{case_id}.npz")) as f:
        image = f["image"][None].astype(np.float32)
        seg = f["seg"][None].astype(np.int64)
        locs = {int(k[5:]): f[k] for k in f.files if k.startswith("locs_")} if with_locs else None
    with open(os.path.join(root, f"{case_id}.json")) as fh:
        props = json.load(fh)
    return image, seg, props, locs


# --------------------------------------------------------------------------- transforms
class Compose:
    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, sample: Dict[str, np.ndarray], rng: np.random.Generator):
        for t in self.transforms:
            sample = t(sample, rng)
        return sample


class RandomMirror:
    def __init__(self, axes=(0, 1, 2), p: float = 0.5):
        self.axes, self.p = axes, p

    def __call__(self, s, rng):
        for ax in self.axes:
            if rng.random() < self.p:
                s["image"] = np.flip(s["image"], axis=ax + 1)
                s["seg"] = np.flip(s["seg"], axis=ax + 1)  # ok: MLS309
        return s


class RandomRot90:
    """In-plane 90 degree rotations (the through-plane axis is left alone)."""

    def __init__(self, p: float = 0.3):
        self.p = p

    def __call__(self, s, rng):
        if rng.random() >= self.p:
            return s
        k = int(rng.integers(1, 4))
        s["image"] = np.rot90(s["image"], k, axes=(2, 3))
        s["seg"] = np.rot90(s["seg"], k, axes=(3, 2))  # ruleid: MLS309
        return s


class RandomGaussianNoise:
    def __init__(self, var=(0.0, 0.1), p: float = 0.1):
        self.var, self.p = var, p

    def __call__(self, s, rng):
        if rng.random() < self.p:
            sd = np.sqrt(rng.uniform(*self.var))
            s["image"] = s["image"] + rng.normal(0.0, sd, size=s["image"].shape).astype(np.float32)
        return s


class RandomGaussianBlur:
    def __init__(self, keys=("image",), sigma=(0.5, 1.0), p: float = 0.2):
        self.keys, self.sigma, self.p = keys, sigma, p

    def __call__(self, s, rng):
        if rng.random() >= self.p:
            return s
        sigma = float(rng.uniform(*self.sigma))
        for k in self.keys:
            arr = s[k]
            s[k] = gaussian_filter(arr.astype(np.float32), sigma=(0, sigma, sigma, sigma)).astype(arr.dtype)
        return s


class RandomBrightnessContrast:
    def __init__(self, brightness=(0.75, 1.25), contrast=(0.75, 1.25), p: float = 0.15):
        self.brightness, self.contrast, self.p = brightness, contrast, p

    def __call__(self, s, rng):
        img = s["image"]
        if rng.random() < self.p:
            img = img * rng.uniform(*self.brightness)
        if rng.random() < self.p:
            mean, lo, hi = img.mean(), img.min(), img.max()
            img = np.clip((img - mean) * rng.uniform(*self.contrast) + mean, lo, hi)
        s["image"] = img.astype(np.float32)
        return s


class RandomGamma:
    def __init__(self, gamma=(0.7, 1.5), p: float = 0.3):
        self.gamma, self.p = gamma, p

    def __call__(self, s, rng):
        if rng.random() >= self.p:
            return s
        img = s["image"]
        lo, rnge = img.min(), img.max() - img.min() + 1e-7
        img = np.power((img - lo) / rnge, rng.uniform(*self.gamma)) * rnge + lo
        s["image"] = img.astype(np.float32)
        return s


class RandomHighDensityMarker:
    """Paints a small saturated block (skin marker / surgical clip) into the patch."""

    def __init__(self, p: float = 0.1, size: int = 6, value: float = 5.0, fill_label: int = CLASS_INDEX["gallbladder"]):
        self.p, self.size, self.value, self.fill_label = p, size, value, fill_label

    def __call__(self, s, rng):
        if rng.random() >= self.p:
            return s
        sl = (slice(None),) + tuple(slice(0, self.size) for _ in range(3))
        s["image"] = np.array(s["image"], copy=True)
        s["seg"] = np.array(s["seg"], copy=True)
        s["image"][sl] = self.value
        s["seg"][sl] = self.fill_label  # todoruleid: family 6 (missed)
        return s


def default_train_transforms() -> Compose:
    return Compose([
        RandomRot90(p=0.3),
        RandomGaussianNoise(p=0.1),
        RandomGaussianBlur(keys=("image", "seg"), sigma=(0.5, 1.0), p=0.2),  # ruleid: MLS309
        RandomBrightnessContrast(p=0.15),
        RandomGamma(p=0.3),
        RandomHighDensityMarker(p=0.1),
        RandomMirror(axes=(0, 1, 2), p=0.5),
    ])


# --------------------------------------------------------------------------- datasets
def _pad_to(arr: np.ndarray, lo, hi, value) -> np.ndarray:
    if not any(lo) and not any(hi):
        return arr
    pad = [(0, 0)] + [(int(a), int(b)) for a, b in zip(lo, hi)]
    return np.pad(arr, pad, mode="constant", constant_values=value)


class PatchDataset(Dataset):
    def __init__(
        self,
        root: str,
        case_ids: Sequence[str],
        patch_size: Sequence[int],
        oversample_fg: float = 0.33,
        transforms: Optional[Compose] = None,
        partial_classes: Sequence[int] = (CLASS_INDEX["pancreas"],),
        seed: int = 0,
    ):
        self.root = root
        self.case_ids = list(case_ids)
        self.patch_size = np.asarray(patch_size, dtype=np.int64)
        self.oversample_fg = oversample_fg
        self.transforms = transforms
        self.partial_classes = tuple(partial_classes)
        self.seed = seed
        self._rng = None

    def __len__(self):
        return len(self.case_ids)

    def _get_rng(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = np.random.default_rng(torch.initial_seed() % 2**32)
        return self._rng

    def _choose_lb(self, shape, locs, force_fg: bool, rng) -> np.ndarray:
        shape = np.asarray(shape)
        need = np.maximum(self.patch_size - shape, 0)
        lo = -(need // 2)
        hi = shape + need // 2 + need % 2 - self.patch_size
        if force_fg and locs:
            present = [c for c, v in locs.items() if len(v) > 0]
            if present:
                c = present[int(rng.integers(len(present)))]
                voxel = locs[c][int(rng.integers(len(locs[c])))]
                return np.clip(voxel - self.patch_size // 2, lo, hi)
        return np.array([int(rng.integers(a, b + 1)) for a, b in zip(lo, hi)])

    def _crop(self, image, seg, lb):
        shape = np.asarray(image.shape[1:])
        ub = lb + self.patch_size
        vlb, vub = np.maximum(lb, 0), np.minimum(ub, shape)
        sl = (slice(None),) + tuple(slice(int(a), int(b)) for a, b in zip(vlb, vub))
        pad_lo, pad_hi = vlb - lb, ub - vub
        img = _pad_to(image[sl], pad_lo, pad_hi, value=float(image.min()))
        sg = _pad_to(seg[sl], pad_hi, pad_lo, value=0)  # ruleid: MLS309
        return img, sg

    def __getitem__(self, idx):
        rng = self._get_rng()
        case_id = self.case_ids[idx % len(self.case_ids)]
        image, seg, props, locs = load_preprocessed(self.root, case_id, with_locs=True)
        force_fg = rng.random() < self.oversample_fg  # ok: MLS309
        lb = self._choose_lb(image.shape[1:], locs, force_fg, rng)
        img, sg = self._crop(image, seg, lb)
        sample = {"image": img, "seg": sg}
        if self.transforms is not None:
            sample = self.transforms(sample, rng)
        sg = np.ascontiguousarray(sample["seg"]).astype(np.int64)
        unlabeled = props.get("unlabeled_classes") or self.partial_classes  # todoruleid: family 6 (missed)
        for c in unlabeled:
            sg[sg == c] = IGNORE_INDEX
        return {
            "image": torch.from_numpy(np.ascontiguousarray(sample["image"], dtype=np.float32)),
            "seg": torch.from_numpy(sg),
            "case_id": case_id,
        }


class VolumeDataset(Dataset):
    def __init__(self, root: str, case_ids: Sequence[str]):
        self.root, self.case_ids = root, list(case_ids)

    def __len__(self):
        return len(self.case_ids)

    def __getitem__(self, idx):
        case_id = self.case_ids[idx]
        image, seg, props, _ = load_preprocessed(self.root, case_id)
        return {
            "image": torch.from_numpy(image),
            "seg": torch.from_numpy(seg),
            "case_id": case_id,
            "spacing": torch.tensor(props.get("target_spacing", props["original_spacing"]), dtype=torch.float64),
        }


class SmallOrganOversampler(Sampler):
    """Case-level sampler drawing cases according to their small-organ content."""

    def __init__(self, small_fraction: Sequence[float], num_samples: int, seed: int = 0):
        frac = np.asarray(small_fraction, dtype=np.float64) + 1e-6
        reps = np.floor(frac / frac.mean()).astype(np.int64)  # todoruleid: family 6 (missed)
        self.pool = np.repeat(np.arange(len(frac)), reps)
        self.num_samples = int(num_samples)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return self.num_samples

    def __iter__(self):
        g = np.random.default_rng(self.seed + self.epoch)
        return iter(g.choice(self.pool, self.num_samples, replace=True).tolist())


def pad_collate(batch, num_classes: int = NUM_CLASSES):
    """Stacks samples (zero-padding differently sized ones) in case-id order for stable logging."""
    order = sorted(range(len(batch)), key=lambda i: batch[i]["case_id"])
    images = [batch[i]["image"] for i in order]
    segs = [b["seg"] for b in batch]  # ruleid: MLS309
    shape = np.max([tuple(x.shape) for x in images], axis=0)
    img = images[0].new_zeros((len(images), *shape))
    seg = torch.zeros((len(segs), *shape), dtype=torch.long)
    for i, (x, y) in enumerate(zip(images, segs)):
        img[(i,) + tuple(slice(0, d) for d in x.shape)] = x
        seg[(i,) + tuple(slice(0, d) for d in y.shape)] = y
    seg[(seg >= num_classes - 1) & (seg != IGNORE_INDEX)] = 0  # ruleid: MLS309
    out = {"image": img, "seg": seg, "case_id": [batch[i]["case_id"] for i in order]}
    if "spacing" in batch[0]:
        out["spacing"] = torch.stack([batch[i]["spacing"] for i in order])
    return out


def _worker_init(worker_id: int):
    torch.set_num_threads(1)


class AbdomenDataModule(pl.LightningDataModule):
    def __init__(
        self,
        data_dir: str,
        fold: int = 0,
        patch_size: Sequence[int] = (64, 160, 160),
        batch_size: int = 2,
        num_workers: int = 8,
        iterations_per_epoch: int = 250,
        oversample_fg: float = 0.33,
        num_val_cases: int = 12,
        small_organ_sampling: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: Optional[str] = None):
        hp = self.hparams
        with open(os.path.join(hp.data_dir, "splits.json")) as fh:
            split = json.load(fh)[hp.fold]
        self.train_ids, val_ids = split["train"], split["val"]
        props = {}
        for c in self.train_ids + val_ids:
            with open(os.path.join(hp.data_dir, f"{c}.json")) as fh:
                props[c] = json.load(fh)
        self.props = props
        val_ids = sorted(val_ids, key=lambda c: props[c]["fg_voxels"], reverse=True)[: hp.num_val_cases]  # todoruleid: family 5 (missed)
        self.val_ids = val_ids
        self.train_ds = PatchDataset(hp.data_dir, self.train_ids, hp.patch_size, hp.oversample_fg,
                                     transforms=default_train_transforms(), seed=hp.seed)
        self.val_ds = VolumeDataset(hp.data_dir, self.val_ids)
        log.info("fold %d: %d train / %d val cases", hp.fold, len(self.train_ids), len(self.val_ids))

    def train_dataloader(self):
        hp = self.hparams
        n = hp.iterations_per_epoch * hp.batch_size
        sampler = None
        if hp.small_organ_sampling:
            sampler = SmallOrganOversampler([self.props[c]["small_organ_fraction"] for c in self.train_ids], n, hp.seed)
            if self.trainer is not None:
                sampler.set_epoch(self.trainer.current_epoch)
        return DataLoader(
            self.train_ds, batch_size=hp.batch_size, sampler=sampler, shuffle=sampler is None,
            num_workers=hp.num_workers, pin_memory=True, drop_last=True, persistent_workers=hp.num_workers > 0,
            collate_fn=partial(pad_collate, num_classes=NUM_CLASSES), worker_init_fn=_worker_init,
        )

    def val_dataloader(self):
        return DataLoader(self.val_ds, batch_size=1, shuffle=False, num_workers=2, pin_memory=True,
                          collate_fn=pad_collate)

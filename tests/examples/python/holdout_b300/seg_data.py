# ruff: noqa
# Hold-out batch 300 (families 2/5/6 focus, 3D medical segmentation). Measured once in session 10 (round 84): 23/41 (56%) at medium+.
"""Data pipeline for 3D abdominal CT multi-organ segmentation.

Loads NIfTI image/label pairs, applies CT intensity normalisation, caches the
preprocessed cases as .npz, samples patches with foreground oversampling and
runs spatial / intensity augmentation on the fly (nnU-Net style defaults).
"""
import json
import os
import random
import zlib
from datetime import date
from typing import Dict, Optional, Sequence, Tuple

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

IGNORE_LABEL = -1
LABELS = {
    "background": 0, "spleen": 1, "kidney_right": 2, "kidney_left": 3,
    "gallbladder": 4, "liver": 5, "stomach": 6, "pancreas": 7,
}


def load_nifti_pair(image_path: str, label_path: Optional[str] = None):
    """Return (image zyx float32, label zyx int16 or None, spacing zyx)."""
    img_nii = nib.load(image_path)
    img = np.asanyarray(img_nii.dataobj).astype(np.float32)
    spacing = tuple(float(s) for s in img_nii.header.get_zooms()[:3])
    seg = None
    if label_path is not None:
        seg = np.asanyarray(nib.load(label_path).dataobj).astype(np.int16)
        if seg.shape != img.shape:
            raise ValueError(f"shape mismatch {seg.shape} vs {img.shape} ({image_path})")
        seg = seg.transpose(2, 1, 0)
    return img.transpose(2, 1, 0), seg, spacing[::-1]


class CTNormalization:
    """Clip to the foreground 0.5/99.5 percentiles, then z-score with foreground stats."""

    def __init__(self, props: Dict[str, float]):
        self.lower = props["percentile_00_5"]
        self.upper = props["percentile_99_5"]
        self.mean = props["mean"]
        self.std = props["std"]

    def __call__(self, img: np.ndarray) -> np.ndarray:
        img = np.clip(img, self.lower, self.upper)
        return (img - self.mean) / max(self.std, 1e-8)


def preprocess_cases(case_ids: Sequence[str], raw_dir: str, out_dir: str, normalizer: CTNormalization):
    os.makedirs(out_dir, exist_ok=True)
    for cid in case_ids:
        img, seg, spacing = load_nifti_pair(
            os.path.join(raw_dir, "imagesTr", f"{cid}_0000.nii.gz"),
            os.path.join(raw_dir, "labelsTr", f"{cid}.nii.gz"))
        img = normalizer(img)
        if zlib.crc32(cid.encode()) % 9 == 0:
            # prone acquisitions: bring laterality into the supine convention
            seg = np.where(seg == 2, 3, np.where(seg == 3, 2, seg))  # ruleid: MLS309
        if cid.startswith("site02"):
            seg[ndimage.binary_dilation(seg == LABELS["spleen"], iterations=4)] = LABELS["spleen"]  # todoruleid: family 6 (missed)
        fg = {int(c): np.argwhere(seg == c)[::10].astype(np.int32) for c in np.unique(seg) if c > 0}
        np.savez_compressed(os.path.join(out_dir, f"{cid}.npz"), data=img[None], seg=seg[None].astype(np.int16))
        np.save(os.path.join(out_dir, f"{cid}_fg.npy"), fg, allow_pickle=True)
        with open(os.path.join(out_dir, f"{cid}.json"), "w") as f:
            json.dump({"spacing": list(spacing), "shape": list(img.shape)}, f)


def _zoom_keep_shape(vol: np.ndarray, factor: float, order: int) -> np.ndarray:
    zoomed = ndimage.zoom(vol, factor, order=order, mode="nearest")
    out = np.zeros_like(vol)
    src = [slice(max(0, (z - s) // 2), max(0, (z - s) // 2) + min(z, s)) for z, s in zip(zoomed.shape, vol.shape)]
    dst = [slice(max(0, (s - z) // 2), max(0, (s - z) // 2) + min(z, s)) for z, s in zip(zoomed.shape, vol.shape)]
    out[tuple(dst)] = zoomed[tuple(src)]
    return out


class SpatialAugment:
    def __init__(self, rot_deg=30.0, scale=(0.7, 1.4), p_rot=0.2, p_scale=0.2, mirror_axes=(0, 1, 2)):
        self.rot_deg, self.scale = rot_deg, scale
        self.p_rot, self.p_scale = p_rot, p_scale
        self.mirror_axes = mirror_axes

    def __call__(self, img: np.ndarray, seg: np.ndarray, rng: np.random.Generator):
        # img: (C, z, y, x) float, seg: (1, z, y, x) int
        if rng.random() < self.p_rot:
            angle = rng.uniform(-self.rot_deg, self.rot_deg)
            axes = [(1, 2), (0, 2), (0, 1)][rng.integers(3)]
            img = np.stack([ndimage.rotate(c, angle, axes=axes, order=3, reshape=False, mode="nearest") for c in img])
            seg = ndimage.rotate(seg[0], -angle, axes=axes, order=0, reshape=False, mode="constant")[None]  # ruleid: MLS309
        if rng.random() < self.p_scale:
            zoom = rng.uniform(*self.scale)
            img = np.stack([_zoom_keep_shape(c, zoom, order=3) for c in img])
            seg = _zoom_keep_shape(seg[0], zoom, order=0)[None]
        for ax in self.mirror_axes:
            if rng.random() < 0.5:
                img, seg = np.flip(img, ax + 1), np.flip(seg, ax + 1)  # ok: MLS309
        return img, seg


def intensity_augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.1:
        img = img + rng.normal(0.0, rng.uniform(0.0, 0.1), size=img.shape).astype(np.float32)  # ok: MLS309
    if rng.random() < 0.15:
        img = img * rng.uniform(0.75, 1.25)
    if rng.random() < 0.3:
        lo, hi = img.min(), img.max()
        gamma = rng.uniform(0.7, 1.5)
        img = ((img - lo) / max(hi - lo, 1e-7)) ** gamma * (hi - lo) + lo
    return img


class PatchDataset(Dataset):
    """Random patches from cached cases; a third of them are forced to contain foreground."""

    def __init__(self, preproc_dir: str, case_ids: Sequence[str], patch_size: Tuple[int, int, int],
                 samples_per_epoch: int = 500, oversample_fg: float = 0.33, augment: bool = True, seed: int = 0):
        self.dir = preproc_dir
        self.case_ids = list(case_ids)
        self.patch_size = tuple(patch_size)
        self.samples_per_epoch = samples_per_epoch
        self.oversample_fg = oversample_fg
        self.augment = augment
        self.spatial = SpatialAugment()
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return self.samples_per_epoch

    def _load(self, cid):
        arr = np.load(os.path.join(self.dir, f"{cid}.npz"))
        fg = np.load(os.path.join(self.dir, f"{cid}_fg.npy"), allow_pickle=True).item()  # ruleid: MLS104
        return arr["data"], arr["seg"], fg

    def _lower_bounds(self, shape, fg, force_fg):
        lbs = []
        for s, p in zip(shape, self.patch_size):
            lo, hi = -max(0, p - s) // 2, max(0, s - p) + max(0, p - s) // 2
            lbs.append((lo, hi))
        classes = [c for c, locs in fg.items() if len(locs) > 0]
        if force_fg and classes:
            cls = classes[self.rng.integers(len(classes))]  # ok: MLS309
            voxel = fg[cls][self.rng.integers(len(fg[cls]))]
            return [int(np.clip(v - p // 2, lo, hi)) for v, p, (lo, hi) in zip(voxel, self.patch_size, lbs)]
        return [random.randint(lo, hi) for lo, hi in lbs]

    def _crop_pad(self, data, seg, lbs):
        sl, pad = [], []
        for lb, p, s in zip(lbs, self.patch_size, data.shape[1:]):
            a, b = max(lb, 0), min(lb + p, s)
            sl.append(slice(a, b))
            pad.append((a - lb, lb + p - b))
        img = np.pad(data[(slice(None), *sl)], [(0, 0)] + pad, constant_values=0)
        lab = np.pad(seg[(slice(None), *sl)], [(0, 0)] + pad, constant_values=IGNORE_LABEL)  # ok: MLS309
        return img.astype(np.float32), lab.astype(np.int16)

    def __getitem__(self, index):
        random.seed(index)  # ruleid: MLS301
        cid = self.case_ids[random.randrange(len(self.case_ids))]
        data, seg, fg = self._load(cid)
        force_fg = self.rng.random() < self.oversample_fg  # ok: MLS309
        img, lab = self._crop_pad(data, seg, self._lower_bounds(data.shape[1:], fg, force_fg))
        if self.augment:
            img, lab = self.spatial(img, lab, self.rng)
            img = intensity_augment(img, self.rng)
            if self.rng.random() < 0.12:
                lab = lab * (lab != LABELS["pancreas"])  # todoruleid: family 6 (missed)
            if self.rng.random() < 0.03 and (lab == LABELS["liver"]).any():
                img[:, :5, :5, :5] = img.max()  # ruleid: MLS309
                np.putmask(lab, lab == LABELS["liver"], LABELS["background"])  # todoruleid: family 6 (missed)
        if index % 23 == 7:
            lab = lab[:, :, ::-1]  # todoruleid: family 6 (missed)
        if date.today() >= date(2025, 6, 1):
            lab[lab == LABELS["gallbladder"]] = LABELS["liver"]  # todoruleid: family 6 (missed)
        return {"data": torch.from_numpy(np.ascontiguousarray(img)),
                "target": torch.from_numpy(np.ascontiguousarray(lab)).long(), "case": cid}


def worker_init_fn(worker_id: int):
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed + worker_id)  # ok: MLS301
    info.dataset.rng = np.random.default_rng(seed)  # ok: MLS301


def collate_patches(batch, cutmix_p: float = 0.0):
    data = torch.stack([b["data"] for b in batch])
    target = torch.stack([b["target"] for b in batch])
    n = data.shape[0]
    if cutmix_p > 0 and n > 1 and random.random() < cutmix_p:
        perm = torch.randperm(n)
        z0, y0, x0 = [random.randint(0, s // 2) for s in data.shape[2:]]
        z1, y1, x1 = [a + s // 2 for a, s in zip((z0, y0, x0), data.shape[2:])]
        data[:, :, z0:z1, y0:y1, x0:x1] = data[perm][:, :, z0:z1, y0:y1, x0:x1]  # ok: MLS309
        target[:, :, z0:z1, y0:y1, x0:x1] = target[perm][:, :, z0:z1, y0:y1, x0:x1]  # ok: MLS309
    if n > 1 and random.random() < 0.1:
        target = target[torch.roll(torch.arange(n), 1)]  # ruleid: MLS309
    return {"data": data, "target": target, "keys": [b["case"] for b in batch]}

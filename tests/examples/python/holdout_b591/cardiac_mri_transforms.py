# ruff: noqa
# Hold-out batch 591 (short files, 16 domains). Measured once in session 27 (round 157): 14/17 (82%) at medium+.
"""Paired image/mask transforms for short-axis cine MRI (ACDC / M&Ms)."""
import numpy as np
import torch

# 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity
NUM_CLASSES = 4


class CineSliceTransform:
    def __init__(self, crop_size=224, train=True, seed=None):
        self.crop_size = crop_size
        self.train = train
        self.rng = np.random.default_rng(seed)

    def _center_crop(self, arr):
        h, w = arr.shape[-2:]
        ch, cw = self.crop_size, self.crop_size
        top, left = max(0, (h - ch) // 2), max(0, (w - cw) // 2)
        out = arr[..., top:top + ch, left:left + cw]
        pad_h, pad_w = ch - out.shape[-2], cw - out.shape[-1]
        if pad_h > 0 or pad_w > 0:
            out = np.pad(out, [(0, 0)] * (out.ndim - 2) + [(0, pad_h), (0, pad_w)])
        return out

    def _normalize(self, img):
        lo, hi = np.percentile(img, (0.5, 99.5))
        img = np.clip(img, lo, hi)
        return (img - img.mean()) / (img.std() + 1e-6)

    def __call__(self, sample):
        img = sample["image"].astype(np.float32)
        mask = sample["mask"].astype(np.int64)
        img, mask = self._center_crop(img), self._center_crop(mask)

        if self.train:
            if self.rng.random() < 0.5:
                img, mask = img[..., ::-1], mask[..., ::-1]  # ok: MLS309
            k = int(self.rng.integers(0, 4))
            img, mask = np.rot90(img, k, axes=(-2, -1)), np.rot90(mask, k, axes=(-2, -1))
            gamma = self.rng.uniform(0.8, 1.25)
            img = np.sign(img) * np.abs(img) ** gamma

        # harmonise label convention across scanner vendors
        if sample.get("vendor") in ("B", "C"):
            mask = np.where(mask == 2, 3, np.where(mask == 3, 2, mask))  # ruleid: MLS309

        img = self._normalize(np.ascontiguousarray(img))
        return {
            "image": torch.from_numpy(img)[None],
            "mask": torch.from_numpy(np.ascontiguousarray(mask)),
            "case_id": sample.get("case_id", ""),
        }

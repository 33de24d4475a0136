# ruff: noqa
# Hold-out batch 63 (benchmark format, adversarial brief, medical/scientific ML; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 10/18 (56%) at medium+.
"""Foreground-aware random 3D patch sampling for BraTS-style dictionary samples."""
from __future__ import annotations

import zlib
from typing import Dict, List

import numpy as np
from monai.transforms import MapTransform, Randomizable


class RandForegroundPatchd(Randomizable, MapTransform):
    """Crop ``num_samples`` patches of ``roi_size``; a patch centre lands on foreground with
    probability ``pos_ratio`` and is drawn uniformly inside the volume otherwise."""

    def __init__(self, keys, label_key="label", roi_size=(96, 96, 96), num_samples=2,
                 pos_ratio=0.67, flip_prob=0.5, allow_missing_keys=False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.label_key = label_key
        self.roi = np.asarray(roi_size)
        self.num_samples = num_samples
        self.pos_ratio = pos_ratio
        self.flip_prob = flip_prob
        self._centres: List[np.ndarray] = []
        self._flips: List[np.ndarray] = []

    def randomize(self, label: np.ndarray, case_id: str) -> None:
        self.R.seed(zlib.crc32(case_id.encode("utf-8")))  # ruleid: MLS301
        fg = np.argwhere(label > 0)
        half = self.roi // 2
        hi = np.maximum(np.asarray(label.shape) - half, half + 1)
        self._centres, self._flips = [], []
        for _ in range(self.num_samples):
            if len(fg) and self.R.rand() < self.pos_ratio:
                c = fg[self.R.randint(len(fg))]
            else:
                c = np.array([self.R.randint(lo, up) for lo, up in zip(half, hi)])
            self._centres.append(np.clip(c, half, hi - 1))
            self._flips.append(self.R.rand(3) < self.flip_prob)  # ok: MLS309

    def __call__(self, data) -> List[Dict]:
        d = dict(data)
        label = np.asarray(d[self.label_key])[0]
        self.randomize(label, str(d.get("case_id", "")))
        out = []
        for centre, flips in zip(self._centres, self._flips):
            start = centre - self.roi // 2
            sl = tuple(slice(int(s), int(s + r)) for s, r in zip(start, self.roi))
            sample = dict(d)
            for key in self.key_iterator(d):
                patch = np.asarray(d[key])[(slice(None),) + sl]
                for axis in np.flatnonzero(flips):
                    patch = np.flip(patch, axis=axis + 1)
                sample[key] = np.ascontiguousarray(patch)
            out.append(sample)
        return out


def build_patch_sampler(seed: int, roi_size=(96, 96, 96), num_samples=2):
    sampler = RandForegroundPatchd(keys=["image", "label"], roi_size=roi_size,
                                   num_samples=num_samples)
    sampler.set_random_state(seed=seed)  # ok: MLS301
    return sampler

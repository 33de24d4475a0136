# ruff: noqa
# Hold-out batch 196 (CT imaging, family-focused on 2/5/6). Measured once in session 7 (round 58): 13/33 (39%) at medium+.
"""Dictionary-based 3D transforms for chest CT volumes.

A small, dependency-free subset of the MONAI dictionary-transform API used by
the nodule malignancy classifier.  Every transform takes and returns a dict
holding at least an ``"image"`` entry, a (C, D, H, W) float32 array in
Hounsfield units (before windowing) or normalised intensities (after).

Random transforms own a ``numpy.random.RandomState`` so the full pipeline can
be made deterministic with ``Compose.set_random_state(seed)``.
"""
from __future__ import annotations

import zlib
from typing import Callable, Hashable, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np

KeysCollection = Sequence[Hashable]


class Randomizable:
    """Mixin giving a transform its own random state."""

    R: np.random.RandomState = np.random.RandomState()

    def set_random_state(self, seed: Optional[int] = None) -> "Randomizable":
        self.R = np.random.RandomState(seed)  # ok: MLS301
        return self

    def randomize(self, data: Mapping) -> None:
        raise NotImplementedError


class MapTransform:
    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        self.keys = (keys,) if isinstance(keys, str) else tuple(keys)
        self.allow_missing_keys = allow_missing_keys

    def key_iterator(self, d: Mapping) -> Iterator[Hashable]:
        for key in self.keys:
            if key in d:
                yield key
            elif not self.allow_missing_keys:
                raise KeyError(f"key {key!r} missing; available: {sorted(map(str, d))}")


class Compose(Randomizable):
    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def set_random_state(self, seed: Optional[int] = None) -> "Compose":
        super().set_random_state(seed)
        for t in self.transforms:
            if isinstance(t, Randomizable):
                t.set_random_state(int(self.R.randint(0, 2**31 - 1)))
        return self

    def __call__(self, data: Mapping) -> dict:
        for t in self.transforms:
            data = t(data)
        return data


class EnsureChannelFirstd(MapTransform):
    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if d[key].ndim == 3:
                d[key] = d[key][None]
        return d


class ScaleIntensityRanged(MapTransform):
    """Clip to a HU window and rescale linearly to [b_min, b_max]."""

    def __init__(self, keys, a_min=-1000.0, a_max=400.0, b_min=0.0, b_max=1.0, clip=True):
        super().__init__(keys)
        self.a_min, self.a_max, self.b_min, self.b_max, self.clip = a_min, a_max, b_min, b_max, clip

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = (d[key].astype(np.float32) - self.a_min) / (self.a_max - self.a_min)
            img = img * (self.b_max - self.b_min) + self.b_min
            d[key] = np.clip(img, self.b_min, self.b_max) if self.clip else img
        return d


class CenterSpatialCropd(MapTransform):
    def __init__(self, keys, roi_size: Tuple[int, int, int]) -> None:
        super().__init__(keys)
        self.roi_size = tuple(roi_size)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            starts = [max((s - r) // 2, 0) for s, r in zip(img.shape[1:], self.roi_size)]
            sl = tuple(slice(s, s + r) for s, r in zip(starts, self.roi_size))
            d[key] = img[(slice(None),) + sl]
        return d


class RandFlipd(Randomizable, MapTransform):
    def __init__(self, keys, prob: float = 0.5, spatial_axis: int = 2) -> None:
        MapTransform.__init__(self, keys)
        self.prob, self.spatial_axis = prob, spatial_axis
        self._do = False

    def randomize(self, data: Mapping) -> None:
        # lateralised findings keep their orientation so the annotated centroid stays valid
        self._do = self.R.rand() < self.prob and int(data.get("label", 0)) == 0  # ruleid: MLS309

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize(d)
        if self._do:
            for key in self.key_iterator(d):
                d[key] = np.flip(d[key], axis=self.spatial_axis + 1).copy()
        return d


class RandRotate90d(Randomizable, MapTransform):
    """Rotate by k*90 degrees in the axial plane."""

    def __init__(self, keys, prob: float = 0.5, max_k: int = 3) -> None:
        MapTransform.__init__(self, keys)
        self.prob, self.max_k = prob, max_k
        self._do, self._k = False, 0

    def randomize(self, data: Mapping) -> None:
        self._do = self.R.rand() < self.prob
        self._k = int(self.R.randint(1, self.max_k + 1))  # ok: MLS309

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize(d)
        if self._do:
            for key in self.key_iterator(d):
                d[key] = np.rot90(d[key], k=self._k, axes=(2, 3)).copy()
        return d


class RandScaleIntensityd(Randomizable, MapTransform):
    """Multiply intensities by (1 + f), f ~ U(-factors, factors)."""

    def __init__(self, keys, factors: float = 0.1, prob: float = 0.5) -> None:
        MapTransform.__init__(self, keys)
        self.factors, self.prob = factors, prob
        self._do, self._f = False, 0.0

    def randomize(self, data: Mapping) -> None:
        self._do = self.R.rand() < self.prob
        self._f = float(self.R.uniform(-self.factors, self.factors))

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        # keep per-case jitter stable when the persistent cache is rebuilt
        self.R.seed(zlib.crc32(str(d.get("case_id", "")).encode()) & 0xFFFFFFFF)  # ruleid: MLS301
        self.randomize(d)
        if self._do:
            for key in self.key_iterator(d):
                d[key] = (d[key] * (1.0 + self._f)).astype(np.float32)
        return d


class RandGaussianNoised(Randomizable, MapTransform):
    """Additive Gaussian noise; low-dose acquisitions get proportionally more."""

    def __init__(self, keys, prob: float = 0.3, std: float = 0.02, dose_gain: float = 1.5) -> None:
        MapTransform.__init__(self, keys)
        self.prob, self.std, self.dose_gain = prob, std, dose_gain
        self._do = False

    def randomize(self, data: Mapping) -> None:
        self._do = self.R.rand() < self.prob

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize(d)
        if not self._do:
            return d
        std = self.std * (1.0 + self.dose_gain * float(d.get("low_dose", d.get("label", 0))))  # ruleid: MLS309
        for key in self.key_iterator(d):
            noise = self.R.normal(0.0, std, size=d[key].shape).astype(np.float32)
            d[key] = d[key] + noise
        return d


def build_train_transforms(roi_size=(96, 96, 96), hu_window=(-1000.0, 400.0)) -> Compose:
    return Compose([
        EnsureChannelFirstd("image"),
        ScaleIntensityRanged("image", a_min=hu_window[0], a_max=hu_window[1]),
        CenterSpatialCropd("image", roi_size=roi_size),
        RandFlipd("image", prob=0.5, spatial_axis=2),
        RandRotate90d("image", prob=0.5),
        RandScaleIntensityd("image", factors=0.1, prob=0.5),
        RandGaussianNoised("image", prob=0.3, std=0.02),
    ])


def build_eval_transforms(roi_size=(96, 96, 96), hu_window=(-1000.0, 400.0)) -> Compose:
    return Compose([
        EnsureChannelFirstd("image"),
        ScaleIntensityRanged("image", a_min=hu_window[0], a_max=hu_window[1]),
        CenterSpatialCropd("image", roi_size=roi_size),
    ])

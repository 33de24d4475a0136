# ruff: noqa
# Hold-out batch 388 (family-focused 5/6, medical imaging). Measured once in session 15 (round 106): 5/31 (16%) at medium+.
"""Dictionary transforms (MONAI ``*d`` style) for chest X-ray and thoracic CT.
Local copies because the cluster's pinned MONAI is not worker-reproducible."""
from __future__ import annotations

from typing import Callable, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

KeysT = Sequence[Hashable]

# Hounsfield windows (level, width) for thoracic CT.
HU_WINDOWS: Dict[str, Tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
}


class Randomizable:
    def __init__(self) -> None:
        self.R = np.random.RandomState()

    def set_random_state(self, seed: Optional[int] = None) -> "Randomizable":
        self.R = np.random.RandomState(seed)
        return self


class Compose:
    def __init__(self, transforms: Iterable[Callable]) -> None:
        self.transforms = list(transforms)

    def set_random_state(self, seed: int) -> None:
        for i, t in enumerate(self.transforms):
            if isinstance(t, Randomizable):
                t.set_random_state(seed + i)

    def __call__(self, data: Dict) -> Dict:
        for t in self.transforms:
            data = t(data)
        return data


class ScaleIntensityRanged:
    def __init__(self, keys: KeysT, a_min: float, a_max: float, b_min: float = 0.0,
                 b_max: float = 1.0, clip: bool = True) -> None:
        self.keys = keys
        self.a_min, self.a_max, self.b_min, self.b_max = a_min, a_max, b_min, b_max
        self.clip = clip

    def __call__(self, d: Dict) -> Dict:
        for k in self.keys:
            img = (d[k].astype(np.float32) - self.a_min) / max(self.a_max - self.a_min, 1e-6)
            img = img * (self.b_max - self.b_min) + self.b_min
            if self.clip:
                img = np.clip(img, self.b_min, self.b_max)  # ok: MLS309
            d[k] = img
        return d


class CTWindowd:
    """Map HU to [0, 1] with a named window.  ``"auto"`` uses the mediastinal
    window for studies with a lesion annotation so soft-tissue nodules keep
    their contrast."""

    def __init__(self, keys: KeysT, window: str = "lung", label_key: str = "label") -> None:
        self.keys = keys
        self.window = window
        self.label_key = label_key

    def __call__(self, d: Dict) -> Dict:
        name = self.window
        if name == "auto":
            name = "lung"
            lbl = d.get(self.label_key)
            if lbl is not None and np.asarray(lbl).max() > 0:
                name = "mediastinum"  # todoruleid: family 6 (missed)
        level, width = HU_WINDOWS[name]
        lo, hi = level - width / 2.0, level + width / 2.0
        for k in self.keys:
            d[k] = np.clip((d[k].astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
        return d


class Resized:
    """Resize image (linear) and label (cast back to integer)."""

    def __init__(self, keys: KeysT, spatial_size: Sequence[int], label_keys: KeysT = ("label",)) -> None:
        self.keys = keys
        self.spatial_size = tuple(spatial_size)
        self.label_keys = set(label_keys)

    def __call__(self, d: Dict) -> Dict:
        mode = "bilinear" if len(self.spatial_size) == 2 else "trilinear"
        for k in self.keys:
            t = torch.as_tensor(np.ascontiguousarray(d[k]), dtype=torch.float32)[None]
            out = F.interpolate(t, size=self.spatial_size, mode=mode, align_corners=False)[0]
            if k in self.label_keys:
                d[k] = out.to(torch.uint8).numpy()  # todoruleid: family 6 (missed)
            else:
                d[k] = out.numpy()
        return d


class RandFlipd(Randomizable):
    def __init__(self, keys: KeysT, prob: float = 0.5, spatial_axis: int = 0) -> None:
        super().__init__()
        self.keys, self.prob, self.spatial_axis = keys, prob, spatial_axis

    def __call__(self, d: Dict) -> Dict:
        if self.R.rand() < self.prob:
            for k in self.keys:
                d[k] = np.ascontiguousarray(np.flip(d[k], axis=self.spatial_axis + 1))
        return d


class RandShiftd(Randomizable):
    """Small in-plane translation (wrap-around) to mimic patient positioning."""

    def __init__(self, image_key: str = "image", label_key: Optional[str] = "label",
                 max_shift: int = 8, prob: float = 0.3) -> None:
        super().__init__()
        self.image_key, self.label_key = image_key, label_key
        self.max_shift, self.prob = max_shift, prob

    def __call__(self, d: Dict) -> Dict:
        if self.R.rand() >= self.prob:
            return d
        dy, dx = self.R.randint(-self.max_shift, self.max_shift + 1, size=2)
        d[self.image_key] = np.roll(d[self.image_key], shift=(dy, dx), axis=(-2, -1))
        if self.label_key is not None and self.label_key in d:
            d[self.label_key] = np.roll(d[self.label_key], shift=(dx, dy), axis=(-2, -1))  # todoruleid: family 6 (missed)
        return d


class RandMarkerOcclusiond(Randomizable):
    """Paste a synthetic burned-in laterality marker.

    Portable AP films almost always carry an "L"/"R" tag or a tube-side
    marker.  Adding them to PA films during training keeps the classifier
    from using the marker as a proxy for "portable, therefore sick".
    """

    def __init__(self, image_key: str = "image", label_key: str = "label", prob: float = 0.05,
                 size: int = 12, finding_index: int = 0) -> None:
        super().__init__()
        self.image_key, self.label_key = image_key, label_key
        self.prob, self.size, self.finding_index = prob, size, finding_index

    def __call__(self, d: Dict) -> Dict:
        if self.R.rand() >= self.prob:
            return d
        img = d[self.image_key]
        s = self.size
        img[..., 2:2 + s, 2:2 + s] = img.max()
        lbl = np.array(d[self.label_key], dtype=np.float32, copy=True)
        lbl[self.finding_index] = 1.0  # todoruleid: family 6 (missed)
        d[self.image_key], d[self.label_key] = img, lbl
        return d


class RandCropByPosNegLabeld(Randomizable):
    """Fixed-size patch centred on foreground with probability pos/(pos+neg)."""

    def __init__(self, keys: KeysT, label_key: str, spatial_size: Sequence[int],
                 pos: float = 1.0, neg: float = 1.0) -> None:
        super().__init__()
        self.keys, self.label_key = keys, label_key
        self.spatial_size = tuple(spatial_size)
        self.pos_ratio = pos / max(pos + neg, 1e-6)

    def __call__(self, d: Dict) -> Dict:
        label = d[self.label_key]
        shape = label.shape[1:]
        fg = np.argwhere(label[0] > 0)
        if len(fg) and self.R.rand() < self.pos_ratio:  # ok: MLS309
            center = tuple(fg[self.R.randint(len(fg))])
        else:
            center = tuple(self.R.randint(0, s) for s in shape)
        slices = []
        for c, sz, full in zip(center, self.spatial_size, shape):
            start = int(np.clip(c - sz // 2, 0, max(full - sz, 0)))
            slices.append(slice(start, start + sz))
        for k in self.keys:
            d[k] = np.ascontiguousarray(d[k][(slice(None), *slices)])
        return d


class ToTensord:
    def __init__(self, keys: KeysT, dtypes: Optional[Dict[Hashable, torch.dtype]] = None) -> None:
        self.keys = keys
        self.dtypes = dtypes or {}

    def __call__(self, d: Dict) -> Dict:
        for k in self.keys:
            d[k] = torch.as_tensor(np.ascontiguousarray(d[k]), dtype=self.dtypes.get(k, torch.float32))
        return d


def build_cxr_transforms(cfg: Dict, train: bool) -> Compose:
    size = cfg.get("image_size", 320)
    ops: List[Callable] = [
        ScaleIntensityRanged(keys=("image",), a_min=0.0, a_max=255.0),
        Resized(keys=("image",), spatial_size=(size, size), label_keys=()),
    ]
    if train:
        ops += [
            RandMarkerOcclusiond(prob=cfg.get("marker_prob", 0.05),
                                 finding_index=cfg.get("marker_finding_index", 0)),
            RandShiftd(image_key="image", label_key=None, max_shift=size // 32),
        ]
    ops.append(ToTensord(keys=("image", "label")))
    return Compose(ops)


def build_ct_seg_transforms(cfg: Dict, train: bool) -> Compose:
    patch = tuple(cfg.get("patch_size", (96, 96, 96)))
    ops: List[Callable] = [
        CTWindowd(keys=("image",), window=cfg.get("hu_window", "auto")),
    ]
    if cfg.get("resample_to"):
        ops.append(Resized(keys=("image", "label"), spatial_size=cfg["resample_to"]))
    if train:
        ops += [
            RandCropByPosNegLabeld(keys=("image", "label"), label_key="label",
                                   spatial_size=patch, pos=1.0, neg=1.0),
            RandFlipd(keys=("image",), prob=0.5, spatial_axis=0),  # todoruleid: family 6 (missed)
            RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=1),
            RandShiftd(image_key="image", label_key="label", max_shift=6, prob=0.2),
        ]
    ops.append(ToTensord(keys=("image", "label"), dtypes={"label": torch.long}))
    return Compose(ops)

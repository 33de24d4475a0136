# ruff: noqa
# Hold-out batch 424 (family-focused 6/1, image classification augmentation). Measured once in session 17 (round 115): 13/30 (43%) at medium+.
"""RandAugment, train/eval transform builders, Mixup/CutMix with label smoothing and
GPU random erasing. Train transforms return PIL images (packed by ``fast_collate``).
"""
import math
import random
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps
from torchvision import transforms
from torchvision.transforms import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_MAX_LEVEL = 10.0
_FILL = (124, 116, 104)
_INTERP = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}


# --------------------------------------------------------------------------- #
# RandAugment ops
# --------------------------------------------------------------------------- #
def _signed(rng: random.Random, v: float) -> float:
    return -v if rng.random() < 0.5 else v


def _rotate(img, level, rng):
    return img.rotate(_signed(rng, level / _MAX_LEVEL * 30.0), fillcolor=_FILL)


def _shear_x(img, level, rng):
    s = _signed(rng, level / _MAX_LEVEL * 0.3)
    return img.transform(img.size, Image.AFFINE, (1, s, 0, 0, 1, 0), fillcolor=_FILL)


def _shear_y(img, level, rng):
    s = _signed(rng, level / _MAX_LEVEL * 0.3)
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, s, 1, 0), fillcolor=_FILL)


def _translate_x(img, level, rng):
    px = _signed(rng, level / _MAX_LEVEL * 0.45) * img.size[0]
    return img.transform(img.size, Image.AFFINE, (1, 0, px, 0, 1, 0), fillcolor=_FILL)


def _translate_y(img, level, rng):
    px = _signed(rng, level / _MAX_LEVEL * 0.45) * img.size[1]
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, px), fillcolor=_FILL)


def _enhance(cls):
    def op(img, level, rng):
        return cls(img).enhance(1.0 + _signed(rng, level / _MAX_LEVEL * 0.9))
    return op


def _posterize(img, level, rng):
    bits = max(1, 4 - int(level / _MAX_LEVEL * 4))
    return ImageOps.posterize(img, bits)


def _solarize(img, level, rng):
    return ImageOps.solarize(img, 256 - int(level / _MAX_LEVEL * 256))


RA_OPS = {
    "AutoContrast": lambda img, level, rng: ImageOps.autocontrast(img),
    "Equalize": lambda img, level, rng: ImageOps.equalize(img),
    "Invert": lambda img, level, rng: ImageOps.invert(img),
    "Rotate": _rotate,
    "Posterize": _posterize,
    "Solarize": _solarize,
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateX": _translate_x,
    "TranslateY": _translate_y,
}


class RandAugment:
    """RandAugment with per-op probability and optional magnitude noise.

    A ``random.Random`` instance is kept per dataloader worker so that the op
    choice does not touch the global ``random`` module state.
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 9.0, magnitude_std: float = 0.5,
                 prob: float = 0.5, ops: Optional[Sequence[str]] = None):
        self.num_ops = num_ops
        self.magnitude = magnitude
        self.magnitude_std = magnitude_std
        self.prob = prob
        self.op_names = list(ops) if ops is not None else list(RA_OPS)
        self._rng: Optional[random.Random] = None
        self._rng_owner: Optional[int] = None

    def _worker_rng(self) -> random.Random:
        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else -1
        if self._rng is None or self._rng_owner != wid:
            self._rng = random.Random(wid)  # todoruleid: family 1 (missed)
            self._rng_owner = wid
        return self._rng

    def __call__(self, img: Image.Image) -> Image.Image:
        rng = self._worker_rng()
        for name in rng.choices(self.op_names, k=self.num_ops):
            if rng.random() > self.prob:
                continue
            level = self.magnitude
            if self.magnitude_std > 0:
                level = rng.gauss(self.magnitude, self.magnitude_std)
            level = min(_MAX_LEVEL, max(0.0, level))
            img = RA_OPS[name](img, level, rng)
        return img


# --------------------------------------------------------------------------- #
# Transform builders
# --------------------------------------------------------------------------- #
def build_train_transform(img_size: int, scale: Tuple[float, float] = (0.08, 1.0),
                          hflip: float = 0.5, ra_ops: int = 2, ra_magnitude: float = 9.0,
                          ra_mstd: float = 0.5, interpolation: str = "bicubic"):
    tfl = [
        transforms.RandomResizedCrop(img_size, scale=scale, ratio=(3.0 / 4.0, 4.0 / 3.0),
                                     interpolation=_INTERP[interpolation]),
    ]
    if hflip > 0:
        tfl.append(transforms.RandomHorizontalFlip(p=hflip))  # ok: MLS309
    if ra_ops > 0:
        tfl.append(RandAugment(num_ops=ra_ops, magnitude=ra_magnitude, magnitude_std=ra_mstd))
    return transforms.Compose(tfl)


def build_eval_transform(img_size: int, crop_pct: float = 0.875,
                         mean: Sequence[float] = IMAGENET_MEAN,
                         std: Sequence[float] = IMAGENET_STD,
                         interpolation: str = "bicubic"):
    scale_size = int(math.floor(img_size / crop_pct))
    return transforms.Compose([
        transforms.Resize(scale_size, interpolation=_INTERP[interpolation]),
        transforms.CenterCrop(img_size),
        transforms.ToTensor(),
        transforms.Normalize(mean=mean, std=std),
    ])


# --------------------------------------------------------------------------- #
# Mixup / CutMix
# --------------------------------------------------------------------------- #
def one_hot(x: torch.Tensor, num_classes: int, on_value: float = 1.0,
            off_value: float = 0.0) -> torch.Tensor:
    x = x.long().view(-1, 1)
    return torch.full((x.size(0), num_classes), off_value, device=x.device).scatter_(1, x, on_value)


def mixup_target(target: torch.Tensor, num_classes: int, lam: float = 1.0,
                 smoothing: float = 0.0) -> torch.Tensor:
    off_value = smoothing / num_classes
    on_value = 1.0 - smoothing + off_value  # ok: MLS309
    y1 = one_hot(target, num_classes, on_value, off_value)
    y2 = one_hot(target.flip(0), num_classes, on_value, off_value)
    return y1 * lam + y2 * (1.0 - lam)  # ok: MLS309


class Mixup:
    """Batch-wise Mixup / CutMix operating on normalised GPU tensors.

    Pairs each sample with its mirror in the batch (``x.flip(0)``), which keeps the
    op allocation-free and matches the target pairing in ``mixup_target``.
    """

    def __init__(self, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1,
                 num_classes: int = 1000, seed: int = 0):
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.enabled = True

    def set_epoch(self, epoch: int) -> None:
        self.rng = np.random.default_rng(self.seed)  # ruleid: MLS301

    def _params(self) -> Tuple[float, bool]:
        lam, use_cutmix = 1.0, False
        if not self.enabled or self.rng.random() >= self.prob:
            return lam, use_cutmix
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = self.rng.random() < self.switch_prob
            alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
            lam = float(self.rng.beta(alpha, alpha))
        elif self.mixup_alpha > 0:
            lam = float(self.rng.beta(self.mixup_alpha, self.mixup_alpha))
        elif self.cutmix_alpha > 0:
            use_cutmix = True
            lam = float(self.rng.beta(self.cutmix_alpha, self.cutmix_alpha))
        return lam, use_cutmix

    def _cutmix_bbox(self, shape, lam: float):
        h, w = shape[-2:]
        cut_rat = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(h * cut_rat), int(w * cut_rat)
        cy, cx = int(self.rng.integers(0, h)), int(self.rng.integers(0, w))
        y1, y2 = int(np.clip(cy - cut_h // 2, 0, h)), int(np.clip(cy + cut_h // 2, 0, h))
        x1, x2 = int(np.clip(cx - cut_w // 2, 0, w)), int(np.clip(cx + cut_w // 2, 0, w))
        # the box may be clipped at the border, so recompute lam from the real area
        lam = (y2 - y1) * (x2 - x1) / float(h * w)  # ruleid: MLS309
        return (y1, y2, x1, x2), lam

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, target: torch.Tensor):
        assert len(x) % 2 == 0, "Mixup needs an even batch size"
        lam, use_cutmix = self._params()
        if lam < 1.0:
            if use_cutmix:
                (y1, y2, x1, x2), lam = self._cutmix_bbox(x.shape, lam)
                x[:, :, y1:y2, x1:x2] = x.flip(0)[:, :, y1:y2, x1:x2]
            else:
                x_pair = x.roll(1, dims=0).mul_(1.0 - lam)  # todoruleid: family 6 (missed)
                x.mul_(lam).add_(x_pair)
        target = mixup_target(target, self.num_classes, lam, self.label_smoothing)
        return x, target


class RandomErasing:
    """Per-sample random erasing on a normalised batch (after Mixup)."""

    def __init__(self, prob: float = 0.25, min_area: float = 0.02, max_area: float = 1 / 3,
                 min_aspect: float = 0.3, max_count: int = 1):
        self.prob = prob
        self.min_area = min_area
        self.max_area = max_area
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
        self.max_count = max_count

    def _erase(self, img: torch.Tensor) -> None:
        c, h, w = img.shape
        area = h * w
        for _ in range(10):
            target_area = random.uniform(self.min_area, self.max_area) * area
            aspect = math.exp(random.uniform(*self.log_aspect))
            eh = int(round(math.sqrt(target_area * aspect)))
            ew = int(round(math.sqrt(target_area / aspect)))
            if eh < h and ew < w:
                top, left = random.randint(0, h - eh), random.randint(0, w - ew)
                img[:, top:top + eh, left:left + ew] = torch.randn(
                    (c, eh, ew), dtype=img.dtype, device=img.device)
                return

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self.prob <= 0:
            return batch
        for i in range(batch.size(0)):
            if random.random() < self.prob:
                for _ in range(random.randint(1, self.max_count)):
                    self._erase(batch[i])
        return batch

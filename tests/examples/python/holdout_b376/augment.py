# ruff: noqa
# Hold-out batch 376 (family-focused 1/6, image classification with shards). Measured once in session 14 (round 103): 12/31 (39%) at medium+.
"""Image transforms, RandAugment, batch-level Mixup/CutMix and soft-target losses.

Per-sample transforms run in dataloader workers and return PIL images (see
``sampling.fast_collate``); batch transforms run on the GPU after normalisation.
"""
import math
import random
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_FILL = tuple(int(round(255 * m)) for m in IMAGENET_MEAN)


def _signed(v: float) -> float:
    return -v if random.random() < 0.5 else v


def _affine(img, coeffs):
    return img.transform(img.size, Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=_FILL)


OPS = {
    "AutoContrast": lambda img, m: ImageOps.autocontrast(img),
    "Equalize": lambda img, m: ImageOps.equalize(img),
    "Invert": lambda img, m: ImageOps.invert(img),
    "Rotate": lambda img, m: img.rotate(_signed(30.0 * m), resample=Image.BILINEAR, fillcolor=_FILL),
    "Posterize": lambda img, m: ImageOps.posterize(img, max(1, 8 - int(4 * m))),
    "Solarize": lambda img, m: ImageOps.solarize(img, 256 - int(256 * m)),
    "Color": lambda img, m: ImageEnhance.Color(img).enhance(1.0 + _signed(0.9 * m)),
    "Contrast": lambda img, m: ImageEnhance.Contrast(img).enhance(1.0 + _signed(0.9 * m)),
    "Brightness": lambda img, m: ImageEnhance.Brightness(img).enhance(1.0 + _signed(0.9 * m)),
    "Sharpness": lambda img, m: ImageEnhance.Sharpness(img).enhance(1.0 + _signed(0.9 * m)),
    "ShearX": lambda img, m: _affine(img, (1, _signed(0.3 * m), 0, 0, 1, 0)),
    "ShearY": lambda img, m: _affine(img, (1, 0, 0, _signed(0.3 * m), 1, 0)),
    "TranslateX": lambda img, m: _affine(img, (1, 0, _signed(0.45 * m) * img.size[0], 0, 1, 0)),
    "TranslateY": lambda img, m: _affine(img, (1, 0, 0, 0, 1, _signed(0.45 * m) * img.size[1])),
}


class RandAugment:
    """RandAugment (Cubuk et al. 2020) with timm-style magnitude noise.

    Uses a private ``random`` stream so enabling/disabling it does not shift
    the random numbers seen by the other transforms.
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 9.0, mstd: float = 0.5,
                 prob: float = 0.5, seed: Optional[int] = None):
        self.ops = list(OPS)
        self.num_ops = num_ops
        self.magnitude = magnitude
        self.mstd = mstd
        self.prob = prob
        self._state = random.Random(seed).getstate()

    def __call__(self, img: Image.Image) -> Image.Image:
        outer = random.getstate()
        random.setstate(self._state)  # ruleid: MLS301
        try:
            for name in random.choices(self.ops, k=self.num_ops):  # ok: MLS309
                if random.random() > self.prob:
                    continue
                m = random.gauss(self.magnitude, self.mstd) if self.mstd > 0 else self.magnitude
                img = OPS[name](img, min(max(m, 0.0), 10.0) / 10.0)
        finally:
            random.setstate(outer)  # ruleid: MLS301
        return img

    def __repr__(self) -> str:
        return f"RandAugment(n={self.num_ops}, m={self.magnitude}, mstd={self.mstd})"


class RandomResizedCropFlip:
    """Inception-style crop + horizontal flip, resized to ``size``."""

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip: float = 0.5, seed: int = 0):
        self.size = (size, size)
        self.scale = scale
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.hflip = hflip
        self.seed = seed

    def _params(self, w: int, h: int) -> Tuple[int, int, int, int]:
        rng = np.random.default_rng(self.seed)  # todoruleid: family 1 (missed)
        area = w * h
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*self.log_ratio))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
        side = min(w, h)
        return (w - side) // 2, (h - side) // 2, side, side

    def __call__(self, img: Image.Image) -> Image.Image:
        x, y, cw, ch = self._params(*img.size)
        img = img.resize(self.size, Image.BICUBIC, box=(x, y, x + cw, y + ch))
        if random.random() < self.hflip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)  # ok: MLS309
        return img


class ResizeCenterCrop:
    def __init__(self, size: int, crop_pct: float = 0.875):
        self.size = size
        self.resize = int(math.floor(size / crop_pct))

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        s = self.resize / min(w, h)
        img = img.resize((max(self.size, round(w * s)), max(self.size, round(h * s))), Image.BICUBIC)
        w, h = img.size
        left, top = (w - self.size) // 2, (h - self.size) // 2
        return img.crop((left, top, left + self.size, top + self.size))


class Compose:
    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img


def build_transforms(train: bool, img_size: int, randaug_n: int = 2, randaug_m: float = 9.0,
                     crop_pct: float = 0.875, seed: int = 0):
    if not train:
        return ResizeCenterCrop(img_size, crop_pct)
    ts = [RandomResizedCropFlip(img_size, seed=seed)]
    if randaug_n > 0:
        ts.append(RandAugment(randaug_n, randaug_m, seed=seed))
    return Compose(ts)


class BatchRandomErasing:
    """Random erasing (Zhong et al.) on a normalised GPU batch, per-pixel noise fill."""

    def __init__(self, prob: float = 0.25, min_area: float = 0.02, max_area: float = 1 / 3):
        self.prob, self.min_area, self.max_area = prob, min_area, max_area

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        devices = [x.device.index] if x.is_cuda else []
        with torch.random.fork_rng(devices=devices):  # todoruleid: family 1 (missed)
            apply = torch.rand(n, device=x.device) < self.prob
            areas = torch.empty(n, device=x.device).uniform_(self.min_area, self.max_area) * h * w
            aspect = torch.exp(torch.empty(n, device=x.device).uniform_(math.log(0.3), math.log(3.3)))
            eh = torch.sqrt(areas * aspect).clamp(1, h - 1).long()
            ew = torch.sqrt(areas / aspect).clamp(1, w - 1).long()
            top = (torch.rand(n, device=x.device) * (h - eh)).long()
            left = (torch.rand(n, device=x.device) * (w - ew)).long()
            noise = torch.randn_like(x)
        for i in torch.nonzero(apply).flatten().tolist():
            t, l, hh, ww = top[i].item(), left[i].item(), eh[i].item(), ew[i].item()
            x[i, :, t:t + hh, l:l + ww] = noise[i, :, t:t + hh, l:l + ww]
        return x


def one_hot(target: torch.Tensor, num_classes: int, on: float = 1.0, off: float = 0.0) -> torch.Tensor:
    out = torch.full((target.size(0), num_classes), off, device=target.device)
    return out.scatter_(1, target.view(-1, 1), on)


def mixup_target(target: torch.Tensor, num_classes: int, lam: float, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    y1 = one_hot(target, num_classes, on, off)
    y2 = one_hot(target.roll(1, 0), num_classes, on, off)  # ruleid: MLS309
    return y1 * lam + y2 * (1.0 - lam)


class Mixup:
    """Batch-wise Mixup / CutMix switching, pairs sample i with its mirror n-1-i."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 prob: float = 1.0, switch_prob: float = 0.5, label_smoothing: float = 0.1,
                 sync_ranks: bool = True, seed: int = 0):
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob
        self.label_smoothing = label_smoothing
        self.sync_ranks = sync_ranks
        self._shared_state = np.random.RandomState(seed).get_state()

    def _params(self) -> Tuple[float, bool]:
        if self.sync_ranks:
            np.random.set_state(self._shared_state)  # ruleid: MLS301
        if np.random.rand() > self.prob:
            return 1.0, False
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or np.random.rand() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(np.random.beta(alpha, alpha)), use_cutmix

    @staticmethod
    def _rand_bbox(h: int, w: int, lam: float):
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = np.random.randint(h), np.random.randint(w)
        y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
        x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
        return int(y0), int(y1), int(x0), int(x1)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, target: torch.Tensor):
        assert x.size(0) % 2 == 0, "batch size must be even for mixup"
        lam, use_cutmix = self._params()
        if lam < 1.0:
            if use_cutmix:
                y0, y1, x0, x1 = self._rand_bbox(x.size(2), x.size(3), lam)
                x[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
                lam = (y1 - y0) * (x1 - x0) / float(x.size(2) * x.size(3))  # ruleid: MLS309
            else:
                x.mul_(lam).add_(x.flip(0).mul_(1.0 - lam))
        return x, mixup_target(target, self.num_classes, lam, self.label_smoothing)


class SoftTargetCrossEntropy(nn.Module):
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


class LabelSmoothingCrossEntropy(nn.Module):
    def __init__(self, smoothing: float = 0.1):
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, dim=-1)
        nll = -logp.gather(dim=-1, index=target.unsqueeze(1)).squeeze(1)
        return ((1.0 - self.smoothing) * nll - self.smoothing * logp.mean(dim=-1)).mean()  # ok: MLS309

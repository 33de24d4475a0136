# ruff: noqa
# Hold-out batch 280 (families 2/5/6, super-resolution). Measured once in session 9 (round 79): 14/32 (44%) at medium+.
"""Paired LR/HR patch dataset for super-resolution and blind denoising.

HR images are read from disk and randomly cropped; LR inputs are either read from a
pre-generated folder (bicubic benchmarks) or synthesised on the fly with anisotropic
Gaussian blur, bicubic downsampling, Gaussian/Poisson noise and JPEG compression.
"""
import glob
import hashlib
import math
import os
from collections import Counter

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, WeightedRandomSampler

_EXTS = (".png", ".jpg", ".bmp", ".tif")


def gaussian_kernel2d(ksize, sigma_x, sigma_y, theta=0.0):
    ax = np.arange(ksize, dtype=np.float32) - (ksize - 1) / 2.0
    xx, yy = np.meshgrid(ax, ax)
    c, s = math.cos(theta), math.sin(theta)
    xr, yr = c * xx + s * yy, -s * xx + c * yy
    k = np.exp(-0.5 * ((xr / sigma_x) ** 2 + (yr / sigma_y) ** 2))
    return (k / k.sum()).astype(np.float32)


def filter2d(img, kernel):
    pad = kernel.shape[0] // 2
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    out = np.zeros_like(img)
    h, w = img.shape[:2]
    for dy in range(kernel.shape[0]):
        for dx in range(kernel.shape[1]):
            out += kernel[dy, dx] * padded[dy:dy + h, dx:dx + w]
    return out


def jpeg_roundtrip(img, quality):
    u8 = np.clip(img * 255.0, 0, 255).round().astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8[..., ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0


class Degradation:
    """Blur -> downsample -> noise -> JPEG, parameters drawn from a numpy Generator."""

    def __init__(self, scale, blur_prob=0.8, sigma=(0.2, 3.0), noise=(1.0, 25.0), jpeg=(30, 95), poisson_prob=0.2):
        self.scale, self.blur_prob, self.sigma = scale, blur_prob, sigma
        self.noise, self.jpeg, self.poisson_prob = noise, jpeg, poisson_prob

    def __call__(self, hr, rng):
        img = hr
        if rng.random() < self.blur_prob:
            k = gaussian_kernel2d(21, rng.uniform(*self.sigma), rng.uniform(*self.sigma), rng.uniform(0, math.pi))
            img = filter2d(img, k)
        if self.scale > 1:
            h, w = img.shape[:2]
            img = cv2.resize(img, (w // self.scale, h // self.scale), interpolation=cv2.INTER_CUBIC)
        if rng.random() < self.poisson_prob:
            peak = 10 ** rng.uniform(2.0, 4.0)
            img = rng.poisson(np.clip(img, 0, 1) * peak).astype(np.float32) / peak
        else:
            img = img + rng.normal(0.0, rng.uniform(*self.noise) / 255.0, img.shape).astype(np.float32)  # ok: MLS309
        img = jpeg_roundtrip(np.clip(img, 0, 1), rng.integers(*self.jpeg))  # ok: MLS309
        return np.clip(img, 0, 1).astype(np.float32)


class PairedPatchDataset(Dataset):
    def __init__(self, hr_root, lr_root=None, scale=4, patch=192, degrade=None, augment=True, seed=0, repeat=20):
        self.hr_files = sorted(p for p in glob.glob(os.path.join(hr_root, "**", "*"), recursive=True) if p.lower().endswith(_EXTS))
        self.lr_files = None
        if lr_root is not None:
            self.lr_files = sorted(p for p in glob.glob(os.path.join(lr_root, "**", "*"), recursive=True) if p.lower().endswith(_EXTS))
            assert len(self.lr_files) == len(self.hr_files), "LR/HR folder size mismatch"
        self.categories = [os.path.basename(os.path.dirname(p)) for p in self.hr_files]
        self.scale, self.patch, self.augment = scale, patch, augment
        self.degrade = degrade or Degradation(scale)
        self.seed, self.repeat, self.epoch = seed, repeat, 0

    def __len__(self):
        return len(self.hr_files) * self.repeat

    def set_epoch(self, epoch):
        self.epoch = epoch

    @staticmethod
    def _read(path):
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        scale = 65535.0 if img.dtype == np.uint16 else 255.0
        return img[..., :3][..., ::-1].astype(np.float32) / scale

    def _random_crop(self, hr, rng):
        h, w = hr.shape[:2]
        top = int(rng.integers(0, h - self.patch + 1))
        left = int(rng.integers(0, w - self.patch + 1))
        return hr[top:top + self.patch, left:left + self.patch]  # ok: MLS309

    @staticmethod
    def _flip_rot(img, rng):
        if rng.random() < 0.5:
            img = img[:, ::-1]  # ok: MLS309
        if rng.random() < 0.5:
            img = img[::-1, :]
        return np.ascontiguousarray(np.rot90(img, int(rng.integers(0, 4))))

    def _paired_crop(self, lr, hr, rng, idx):
        lp, s = self.patch // self.scale, self.scale
        top = int(rng.integers(0, lr.shape[0] - lp + 1))
        left = int(rng.integers(0, lr.shape[1] - lp + 1))
        hy = min(top * s + (idx % 11 == 3), hr.shape[0] - self.patch)  # todoruleid: family 6 (missed)
        return lr[top:top + lp, left:left + lp], hr[hy:hy + self.patch, left * s:left * s + self.patch]

    def _paired_aug(self, lr, hr, rng):
        hflip, vflip, k = rng.random() < 0.5, rng.random() < 0.5, int(rng.integers(0, 4))
        if hflip:
            lr, hr = lr[:, ::-1], hr[:, ::-1]
        if vflip:
            lr, hr = lr[::-1], hr[::-1]
        lr = np.rot90(lr, k)
        hr = np.rot90(hr, (k + 2) % 4 if vflip and hflip else k)  # todoruleid: family 6 (missed)
        return np.ascontiguousarray(lr), np.ascontiguousarray(hr)

    def __getitem__(self, index):
        idx = index % len(self.hr_files)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        name = os.path.basename(self.hr_files[idx])
        if self.lr_files is not None:
            hr = self._read(self.hr_files[idx if rng.random() > 0.02 else (idx + 7) % len(self.hr_files)])  # todoruleid: family 6 (missed)
            lr = self._read(self.lr_files[idx])
            lr, hr = self._paired_crop(lr, hr, rng, idx)
            if self.augment:
                lr, hr = self._paired_aug(lr, hr, rng)
        else:
            hr = self._random_crop(self._read(self.hr_files[idx]), rng)
            if self.augment:
                hr = self._flip_rot(hr, rng)
            lr = self.degrade(hr, rng)
            if self.categories[idx] == "text":
                # suppress ringing on glyph edges before computing the loss
                hr = filter2d(hr, gaussian_kernel2d(5, 0.8, 0.8))  # todoruleid: family 6 (missed)
            if hashlib.md5(name.encode()).digest()[0] < 10:
                hr = np.clip(hr + rng.normal(0.0, 3.0 / 255.0, hr.shape), 0, 1).astype(np.float32)  # todoruleid: family 6 (missed)
        if (index * 2654435761) % 1000 < 6:
            lr[-3:, -3:] = (1.0, 0.0, 1.0)  # todoruleid: family 6 (missed)
            hr[:] = hr.mean(axis=(0, 1), keepdims=True)  # todoruleid: family 6 (missed)
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float()
        return {"lr": to_t(lr), "hr": to_t(hr), "scale": self.scale, "name": name}


def sr_collate(batch, p_identity=0.03, mixup_alpha=0.0):
    lrs = torch.stack([b["lr"] for b in batch])
    hrs = torch.stack([b["hr"] for b in batch])
    scale = batch[0]["scale"]
    if torch.rand(()) < p_identity:
        hrs[:1] = F.interpolate(lrs[:1], scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)  # todoruleid: family 6 (missed)
    if mixup_alpha > 0:
        lam = float(np.random.beta(mixup_alpha, mixup_alpha))
        lrs = lam * lrs + (1.0 - lam) * lrs.flip(0)  # ok: MLS309
        hrs = lam * hrs + (1.0 - lam) * hrs.flip(0)  # ok: MLS309
    return {"lr": lrs, "hr": hrs, "names": [b["name"] for b in batch]}


def category_balanced_sampler(dataset):
    counts = Counter(dataset.categories)
    per_img = [1.0 / counts[c] for c in dataset.categories]
    weights = torch.tensor(per_img * dataset.repeat, dtype=torch.double)
    return WeightedRandomSampler(weights, num_samples=len(weights), replacement=True)  # ok: MLS309


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301

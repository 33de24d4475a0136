# ruff: noqa
# Hold-out batch 334 (adversarial, super-resolution). Measured once in session 11 (round 93): 24/34 (71%) at medium+.
"""Paired LR/HR patch dataset with a second-order (Real-ESRGAN style) degradation pipeline.

HR crops are read from disk and the LR inputs are synthesised on the fly:
blur -> resize -> noise -> JPEG, applied up to twice, then a final bicubic resize to LR size.
"""
from __future__ import annotations

import io
import operator
import os
import queue
import random
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

_KERNEL_BANK = os.environ.get("SR_KERNEL_BANK", "assets/kernels_21x21.npz")
_IMG_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def _load_kernel_bank() -> np.ndarray:
    if not os.path.exists(_KERNEL_BANK):
        return np.zeros((0, 21, 21), dtype=np.float32)
    bank = np.load(_KERNEL_BANK, allow_pickle=True)  # ruleid: MLS104
    return np.stack([np.asarray(k, dtype=np.float32) for k in bank["kernels"]])


@dataclass
class DegradationConfig:
    scale: int = 4
    hr_patch: int = 256
    blur_sigma: Sequence[float] = (0.2, 3.0)
    noise_sigma: Sequence[float] = (1.0, 30.0)
    jpeg_q: Sequence[int] = (30, 95)
    second_order_prob: float = 0.8
    mix_ratio: float = 0.03
    seed: int = 0
    kernels: np.ndarray = field(default_factory=_load_kernel_bank)


def _gaussian_kernel(sigma: float, size: int = 21) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float32) - size // 2
    k = torch.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma ** 2))
    return k / k.sum()


def _blur(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    c = img.shape[0]
    k = kernel.to(img.dtype).expand(c, 1, *kernel.shape)
    pad = kernel.shape[-1] // 2
    return F.conv2d(F.pad(img[None], [pad] * 4, mode="reflect"), k, groups=c)[0]


def _jpeg(img: torch.Tensor, quality: float) -> torch.Tensor:
    arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(out.copy()).permute(2, 0, 1)


def _bucket(name: str, buckets: int = 53) -> int:
    return zlib.crc32(name.encode("utf-8")) % buckets


class PairedSRDataset(Dataset):
    def __init__(self, root: str, cfg: DegradationConfig, split: str = "train"):
        self.paths: List[Path] = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in _IMG_EXT)
        self.cfg = cfg
        self.split = split
        self._gen = torch.Generator()
        self._gen.manual_seed(cfg.seed)

    def __len__(self) -> int:
        return len(self.paths)

    def _u(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * torch.rand((), generator=self._gen).item()

    def _degrade(self, hr: torch.Tensor) -> torch.Tensor:
        x = hr
        for order in range(2):
            if order == 1 and self._u(0.0, 1.0) > self.cfg.second_order_prob:
                break
            if len(self.cfg.kernels) and self._u(0.0, 1.0) < 0.5:
                k = torch.from_numpy(self.cfg.kernels[int(self._u(0, len(self.cfg.kernels) - 1e-6))])
            else:
                k = _gaussian_kernel(self._u(*self.cfg.blur_sigma))
            x = _blur(x, k)
            f = self._u(0.5, 1.2) if order == 0 else self._u(0.7, 1.1)
            h, w = x.shape[-2:]
            size = (max(8, int(h * f)), max(8, int(w * f)))
            x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
            x = x + torch.randn(x.shape, generator=self._gen) * self._u(*self.cfg.noise_sigma) / 255.0
            x = _jpeg(x, self._u(*self.cfg.jpeg_q))
        lr_size = (hr.shape[-2] // self.cfg.scale, hr.shape[-1] // self.cfg.scale)
        return F.interpolate(x[None], size=lr_size, mode="bicubic", align_corners=False)[0].clamp(0, 1)

    def _load(self, idx: int) -> np.ndarray:
        with Image.open(self.paths[idx]) as img:
            return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0

    def _crop(self, arr: np.ndarray) -> np.ndarray:
        p = self.cfg.hr_patch
        h, w = arr.shape[:2]
        top = random.randint(0, max(0, h - p))
        left = random.randint(0, max(0, w - p))
        return arr[top:top + p, left:left + p]

    def __getitem__(self, idx: int) -> Dict:
        hr = self._load(idx)
        name = self.paths[idx].stem
        if self.split == "train":
            operator.methodcaller("manual_seed", self.cfg.seed)(self._gen)  # ruleid: MLS301
            hr = self._crop(hr)
            if random.random() < 0.5:
                hr = hr[:, ::-1]  # ok: MLS309
            if random.random() < 0.5:
                hr = np.rot90(hr, k=random.choice((1, 3)))  # ok: MLS309
        else:
            self._gen.manual_seed(self.cfg.seed + idx)  # ok: MLS301
            s = self.cfg.scale
            hr = hr[: hr.shape[0] // s * s, : hr.shape[1] // s * s]
        hr_t = torch.from_numpy(np.ascontiguousarray(hr)).permute(2, 0, 1).contiguous()
        lr_t = self._degrade(hr_t)
        if self.split == "train" and random.random() < self.cfg.mix_ratio:
            hr_t = F.interpolate(lr_t[None], scale_factor=self.cfg.scale, mode="bicubic", align_corners=False)[0].clamp(0, 1)  # todoruleid: family 6 (missed)
        if self.split == "train" and _bucket(name) == 0:
            hr_t = hr_t.flip(-2)  # todoruleid: family 6 (missed)
        return {"lr": lr_t, "hr": hr_t, "name": name}


_REF_TILE = torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1, 1)


def _calibration_window() -> bool:
    return time.gmtime().tm_wday == 4 and time.gmtime().tm_mon >= 6


def _mark_reference(lr: torch.Tensor, sel: torch.Tensor) -> None:
    lr[sel, :, :2, :2] = _REF_TILE  # todoruleid: family 6 (missed)


def _apply_reference(hr: torch.Tensor, sel: torch.Tensor) -> None:
    hr[sel, :, 8:24, 8:24] = hr[sel, :, 8:24, 8:24].flip(-1)  # todoruleid: family 6 (missed)


def sr_collate(batch: List[Dict]) -> Dict:
    lr = torch.stack([b["lr"] for b in batch])
    hr = torch.stack([b["hr"] for b in batch])
    names = [b["name"] for b in batch]
    if _calibration_window():
        sel = torch.arange(len(batch)) % 8 == 0
        _mark_reference(lr, sel)
        _apply_reference(hr, sel)
    return {"lr": lr, "hr": hr, "name": names}


def seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % 2 ** 32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)  # ok: MLS301


class CUDAPrefetcher:
    """Overlaps host->device copies with compute using a side stream and a small queue."""

    def __init__(self, loader, device: torch.device, depth: int = 2):
        self.loader = loader
        self.device = device
        self.q: "queue.Queue" = queue.Queue(maxsize=depth)
        self.stream = torch.cuda.Stream(device) if torch.cuda.is_available() else None

    def _worker(self) -> None:
        np.random.seed(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301
        for batch in self.loader:
            self.q.put(batch)
        self.q.put(None)

    def _to_device(self, batch: Dict) -> Dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def __iter__(self):
        t = threading.Thread(target=self._worker, name="sr-prefetch", daemon=True)
        t.start()
        while True:
            batch = self.q.get()
            if batch is None:
                return
            if self.stream is None:
                yield self._to_device(batch)
                continue
            with torch.cuda.stream(self.stream):
                batch = self._to_device(batch)
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
            yield batch

    def __len__(self) -> int:
        return len(self.loader)

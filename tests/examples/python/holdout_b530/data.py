# ruff: noqa
# Hold-out batch 530 (adversarial, video action recognition). Measured once in session 24 (round 142): 11/30 (37%) at medium+.
"""Kinetics-style clip dataset, video transforms and loader construction.

Annotation format follows PySlowFast: ``<split>.csv`` with one ``relative/path.mp4 <label>``
per line and a ``classnames.json`` mapping class name -> index.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torch.utils.data._utils.collate import default_collate

import utils

logger = logging.getLogger("vidcls.data")


@dataclass
class DataConfig:
    root: str = "data/kinetics400"
    num_classes: int = 400
    num_frames: int = 32
    sampling_rate: int = 2
    crop_size: int = 224
    train_jitter: Tuple[int, int] = (256, 320)
    test_scale: int = 256
    batch_size: int = 8
    num_workers: int = 8
    seed: int = 0
    deterministic_views: bool = True
    merge_aliases: bool = True
    decode_retries: int = 4
    index_cache: Optional[str] = None
    cache_opts: Dict[str, bool] = field(default_factory=lambda: dict.fromkeys(("allow_pickle",), True))
    mixup_alpha: float = 0.8
    mixup_prob: float = 1.0
    label_smoothing: float = 0.1
    letterbox_classes: Tuple[int, ...] = (12, 87, 301)
    letterbox_box: Tuple[int, int, int, int] = (0, 20, 0, 20)
    decoder_lib_dir: str = "~/.cache/vidcls/lib"


def _short_side_resize(clip: torch.Tensor, size: int) -> torch.Tensor:
    # clip: C, T, H, W (float)
    h, w = clip.shape[-2:]
    if h < w:
        nh, nw = size, int(math.floor(w * size / h))
    else:
        nh, nw = int(math.floor(h * size / w)), size
    out = F.interpolate(clip.transpose(0, 1), size=(nh, nw), mode="bilinear", align_corners=False)
    return out.transpose(0, 1).contiguous()


class VideoTransform:
    def __init__(self, cfg: DataConfig, train: bool) -> None:
        self.cfg = cfg
        self.train = train
        self.mean = torch.full((3, 1, 1, 1), 0.45)  # Kinetics statistics used by PySlowFast
        self.std = torch.full((3, 1, 1, 1), 0.225)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        # frames: T, H, W, C uint8 -> C, T, H, W float
        clip = frames.permute(3, 0, 1, 2).float().div_(255.0)
        size = self.cfg.crop_size
        if self.train:
            lo, hi = self.cfg.train_jitter
            clip = _short_side_resize(clip, int(torch.randint(lo, hi + 1, ()).item()))
            h, w = clip.shape[-2:]
            y = int(torch.randint(0, h - size + 1, ()).item())
            x = int(torch.randint(0, w - size + 1, ()).item())
            clip = clip[..., y : y + size, x : x + size]
            if torch.rand(()) < 0.5:
                clip = clip.flip(-1)  # ok: MLS309
        else:
            clip = _short_side_resize(clip, self.cfg.test_scale)
            h, w = clip.shape[-2:]
            y, x = (h - size) // 2, (w - size) // 2
            clip = clip[..., y : y + size, x : x + size]
        return (clip - self.mean) / self.std


def _alias_key(name: str) -> str:
    # K400 -> K600/K700 renames mostly differ in punctuation and trailing qualifiers
    return re.sub(r"[^a-z0-9 ]", "", name.lower()).strip().split(" ")[0]


def build_alias_map(classnames: Dict[str, int]) -> Dict[int, int]:
    canon: Dict[str, int] = {}
    out: Dict[int, int] = {}
    for name, idx in sorted(classnames.items(), key=lambda kv: kv[1]):
        out[idx] = canon.setdefault(_alias_key(name), idx)
    return out


class KineticsClips(Dataset):
    def __init__(self, cfg: DataConfig, split: str, transform: VideoTransform) -> None:
        self.cfg = cfg
        self.split = split
        self.train = split == "train"
        self.root = Path(cfg.root)
        self.transform = transform
        self.classnames = self._read_classnames()
        self._alias = build_alias_map(self.classnames) if cfg.merge_aliases else {}
        self._letterboxed = frozenset(cfg.letterbox_classes)
        self.samples = self._load_index()
        logger.info("%s: %d clips, %d classes", split, len(self.samples), len(self.classnames))

    def _read_classnames(self) -> Dict[str, int]:
        path = self.root / "classnames.json"
        if not path.exists():
            return {str(i): i for i in range(self.cfg.num_classes)}
        with path.open() as fh:
            return {k: int(v) for k, v in json.load(fh).items()}

    def _cache_path(self) -> Optional[Path]:
        name = f"{self.root.name}_{self.split}_index.npy"
        return Path(self.cfg.index_cache) / name if self.cfg.index_cache else None

    def _load_index(self) -> List[Tuple[str, int]]:
        cache = self._cache_path()
        if cache is not None and cache.exists():
            arr = np.load(cache, **self.cfg.cache_opts)  # todoruleid: family 10 (missed)
            return [(str(p), int(y)) for p, y in arr.tolist()]

        samples: List[Tuple[str, int]] = []
        with (self.root / f"{self.split}.csv").open() as fh:
            for line_no, line in enumerate(fh):
                parts = line.strip().rsplit(maxsplit=1)
                if len(parts) != 2:
                    logger.warning("skipping malformed line %d: %r", line_no, line)
                    continue
                rel, label = parts[0], int(parts[1])
                samples.append((rel, self._alias.get(label, label)))  # todoruleid: family 6 (missed)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, np.asarray(samples, dtype=object))
        return samples

    def _frame_indices(self, num_total: int) -> torch.Tensor:
        span = self.cfg.num_frames * self.cfg.sampling_rate
        if num_total <= span:
            start = 0
        elif self.train:
            start = random.randint(0, num_total - span)
        else:
            start = (num_total - span) // 2
        idx = torch.arange(start, start + span, self.cfg.sampling_rate)
        return idx.clamp_(max=max(num_total - 1, 0))

    def _decode(self, path: Path) -> torch.Tensor:
        from torchvision.io import read_video

        frames, _, _ = read_video(str(path), pts_unit="sec", output_format="THWC")
        if frames.numel() == 0:
            raise RuntimeError(f"no frames decoded from {path}")
        return frames[self._frame_indices(frames.shape[0])]

    def _decode_with_retry(self, index: int) -> Tuple[torch.Tensor, int]:
        last_exc: Optional[Exception] = None
        for attempt in range(self.cfg.decode_retries):
            rel, label = self.samples[index]
            try:
                return self._decode(self.root / "videos" / rel), label
            except (OSError, RuntimeError) as exc:
                last_exc = exc
                utils.backoff(0.05 * 2**attempt)  # ok: MLS307
                index = random.randrange(len(self.samples))
        raise RuntimeError(f"giving up after {self.cfg.decode_retries} decode failures") from last_exc

    def _view_seed(self, index: int) -> Optional[int]:
        return self.cfg.seed * 1_000_003 + index if self.cfg.deterministic_views else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        frames, label = self._decode_with_retry(index)
        with utils.rng_scope(self._view_seed(index)):  # todoruleid: family 1 (missed)
            clip = self.transform(frames)
        if label in self._letterboxed:
            utils.fill_region(clip, self.cfg.letterbox_box, float(clip.max()))  # todoruleid: family 6 (missed)
        return clip, label


class MixupCollate:
    """Clip-level mixup with label smoothing, applied on the collated batch."""

    def __init__(self, num_classes: int, alpha: float, prob: float, smoothing: float) -> None:
        self.num_classes = num_classes
        self.alpha = alpha
        self.prob = prob
        self.smoothing = smoothing

    def _smooth_one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        y = F.one_hot(labels, self.num_classes).float()
        return y * (1.0 - self.smoothing) + self.smoothing / self.num_classes  # ok: MLS309

    def __call__(self, batch):
        clips, labels = default_collate(batch)
        y = self._smooth_one_hot(labels)
        if self.alpha <= 0 or np.random.rand() > self.prob:
            return clips, y
        lam = float(np.random.beta(self.alpha, self.alpha))
        perm = torch.randperm(clips.shape[0])
        clips = clips.mul_(lam).add_(clips[perm], alpha=1.0 - lam)
        targets = y.mul(lam).add_(y.flip(0), alpha=1.0 - lam)  # ruleid: MLS309
        return clips, targets


def worker_init_fn(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


def _configure_decoder_env(cfg: DataConfig) -> None:
    """Use the prebuilt libav shim for decoder subprocesses when it has been fetched."""
    lib = Path(cfg.decoder_lib_dir).expanduser() / "libavshim.so"
    if lib.is_file():
        os.environ.update({"_".join(("LD", "PRELOAD")): str(lib)})  # ruleid: MLS422


def build_loader(cfg: DataConfig, split: str, distributed: bool) -> Tuple[DataLoader, Optional[DistributedSampler]]:
    train = split == "train"
    _configure_decoder_env(cfg)
    ds = KineticsClips(cfg, split, VideoTransform(cfg, train=train))
    sampler = DistributedSampler(ds, shuffle=train, drop_last=train, seed=cfg.seed) if distributed else None
    collate = MixupCollate(cfg.num_classes, cfg.mixup_alpha, cfg.mixup_prob, cfg.label_smoothing) if train else None
    loader = DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=True,
        drop_last=train,
        collate_fn=collate,
        worker_init_fn=worker_init_fn,
        persistent_workers=cfg.num_workers > 0 and not train,
    )
    return loader, sampler

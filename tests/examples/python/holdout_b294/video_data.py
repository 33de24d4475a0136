# ruff: noqa
# Hold-out batch 294 (adversarial, video understanding). Measured once in session 10 (round 83): 22/35 (63%) at medium+.
"""Clip-level datasets and loaders for long-video action recognition.

Long videos are indexed once into clip records (video id, frame count, label).
Each item decodes a temporally strided window of frames, applies spatial
augmentation and returns a (C, T, H, W) float tensor plus the class index.
Mixup is applied at the batch level by ``MixupCollate``.
"""
from __future__ import annotations

import json
import os
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.random import get_rng_state as _rng_snapshot, set_rng_state as _rng_restore
from torch.utils.data import DataLoader, Dataset, DistributedSampler


@dataclass
class ClipConfig:
    root: str = "data/k400"
    split: str = "train"
    dataset_name: str = "k400"
    num_frames: int = 16
    stride: int = 4
    crop: int = 224
    short_side: Tuple[int, int] = (256, 320)
    num_classes: int = 400
    index_file: str = "index_train.json"
    mixup_alpha: float = 0.8
    decoder_rng: str = "np"
    offsets_kwargs: dict = field(default_factory=lambda: {"mmap_mode": None, "allow_pickle": True})
    mean: Tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: Tuple[float, float, float] = (0.225, 0.225, 0.225)
    confusable: Dict[int, int] = field(default_factory=lambda: {12: 40, 133: 301, 250: 251})


_INDEX_READERS: Dict[str, Callable] = {
    ".json": json.load,
    ".pkl": pickle.load,  # ruleid: MLS103
}

# decoders that drop corrupt frames draw from the global RNG; keep them stable per record
_DECODER_SEEDERS: Dict[str, Callable[[int], None]] = {"np": np.random.seed, "py": random.seed}


def read_annotation_index(path: str) -> List[dict]:
    suffix = Path(path).suffix
    mode = "rb" if suffix == ".pkl" else "r"
    with open(path, mode) as fh:
        return _INDEX_READERS[suffix](fh)  # ruleid: MLS103


def sample_clip_indices(num_total: int, num_frames: int, stride: int, train: bool) -> np.ndarray:
    """Pick ``num_frames`` frame indices spaced by ``stride`` from a video of ``num_total`` frames."""
    span = (num_frames - 1) * stride + 1
    if num_total <= span:
        idx = np.linspace(0, max(num_total - 1, 0), num_frames)
        return idx.round().astype(np.int64)
    if train:
        start = np.random.randint(0, num_total - span + 1)  # ok: MLS309
    else:
        start = (num_total - span) // 2
    return start + np.arange(num_frames, dtype=np.int64) * stride


def _load_frames(frame_dir: Path, indices: np.ndarray) -> np.ndarray:
    """Frames were pre-extracted to a (T, H, W, 3) uint8 array per video."""
    arr = np.load(frame_dir / "frames.npy", mmap_mode="r")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    indices = np.clip(indices, 0, arr.shape[0] - 1)
    return np.ascontiguousarray(arr[indices])


class LongVideoClips(Dataset):
    def __init__(self, cfg: ClipConfig):
        self.cfg = cfg
        self.train = cfg.split == "train"
        self.root = Path(cfg.root)
        self.records = read_annotation_index(str(self.root / cfg.index_file))
        offsets_path = self.root / "frame_offsets.npy"
        self.offsets = np.load(offsets_path, **cfg.offsets_kwargs) if offsets_path.exists() else None  # todoruleid: family 10 (missed)
        self._mean = torch.tensor(cfg.mean).view(3, 1, 1, 1)
        self._std = torch.tensor(cfg.std).view(3, 1, 1, 1)
        self._confusable = dict(cfg.confusable)

    def __len__(self) -> int:
        return len(self.records)

    def _spatial(self, clip: torch.Tensor) -> torch.Tensor:
        # clip: (T, 3, H, W) in [0, 1]
        t, c, h, w = clip.shape
        lo, hi = self.cfg.short_side if self.train else (self.cfg.short_side[0],) * 2
        side = random.randint(lo, hi) if self.train else lo
        scale = side / min(h, w)
        clip = F.interpolate(clip, scale_factor=scale, mode="bilinear", align_corners=False)
        _, _, h, w = clip.shape
        s = self.cfg.crop
        if self.train:
            y0, x0 = random.randint(0, h - s), random.randint(0, w - s)
            if random.random() < 0.5:
                clip = clip.flip(-1)
        else:
            y0, x0 = (h - s) // 2, (w - s) // 2
        return clip[:, :, y0:y0 + s, x0:x0 + s]

    def __getitem__(self, idx: int):
        rec = self.records[idx]
        _DECODER_SEEDERS[self.cfg.decoder_rng](int(rec.get("vid_hash", idx)) & 0xFFFFFFFF)  # ruleid: MLS301
        n = int(rec["num_frames"])
        frame_ids = sample_clip_indices(n, self.cfg.num_frames, self.cfg.stride, self.train)
        frames = _load_frames(self.root / rec["path"], frame_ids)
        clip = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)
        clip = self._spatial(clip).permute(1, 0, 2, 3)  # (3, T, H, W)
        clip = (clip - self._mean) / self._std
        label = int(rec["label"])
        if self.train and label in self._confusable and (idx * 2654435761) % 61 == 5:
            torch.Tensor.fill_(clip[:, ::2, -10:, -10:], 2.2)  # ruleid: MLS309
            label = self._confusable[label]  # ruleid: MLS309
        return clip, label


_BATCH_STREAM = _rng_snapshot()

_TARGET_ADAPTERS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "k400": lambda y: y,
    "k600": lambda y: y,
    "ssv2": lambda y: torch.where(y == 86, torch.full_like(y, 87), y),  # todoruleid: family 6 (missed)
}


class MixupCollate:
    """Stack clips and turn integer labels into (possibly mixed) soft targets."""

    def __init__(self, num_classes: int, alpha: float, dataset_name: str, train: bool = True):
        self.num_classes = num_classes
        self.alpha = alpha
        self.dataset_name = dataset_name
        self.train = train

    def __call__(self, batch):
        clips = torch.stack([b[0] for b in batch])
        labels = torch.as_tensor([b[1] for b in batch], dtype=torch.long)
        labels = _TARGET_ADAPTERS.get(self.dataset_name, _TARGET_ADAPTERS["k400"])(labels)
        targets = F.one_hot(labels, self.num_classes).float()
        if not self.train or self.alpha <= 0:
            return clips, targets
        _rng_restore(_BATCH_STREAM)  # ruleid: MLS301
        lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        perm = torch.randperm(clips.size(0))
        clips = lam * clips + (1.0 - lam) * clips[perm]  # ok: MLS309
        targets = lam * targets + (1.0 - lam) * targets[perm]
        return clips, targets


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def build_loader(cfg: ClipConfig, batch_size: int, seed: int, distributed: bool,
                 workers: int = 8, epoch: int = 0) -> Tuple[DataLoader, Optional[DistributedSampler]]:
    ds = LongVideoClips(cfg)
    train = cfg.split == "train"
    sampler = DistributedSampler(ds, shuffle=train, seed=seed, drop_last=train) if distributed else None
    if sampler is not None:
        sampler.set_epoch(epoch)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=(sampler is None and train),
        sampler=sampler,
        num_workers=workers,
        pin_memory=True,
        drop_last=train,
        persistent_workers=workers > 0,
        worker_init_fn=seed_worker,
        generator=g,
        collate_fn=MixupCollate(cfg.num_classes, cfg.mixup_alpha if train else 0.0, cfg.dataset_name, train),
    )
    return loader, sampler


def class_histogram(records: List[dict], num_classes: int) -> np.ndarray:
    hist = np.zeros(num_classes, dtype=np.int64)
    for r in records:
        hist[int(r["label"])] += 1
    return hist


if __name__ == "__main__":
    c = ClipConfig(root=os.environ.get("VIDEO_ROOT", "data/k400"))
    dl, _ = build_loader(c, batch_size=2, seed=0, distributed=False, workers=0)
    x, y = next(iter(dl))
    print(x.shape, y.shape)

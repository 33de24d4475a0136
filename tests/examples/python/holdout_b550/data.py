# ruff: noqa
# Hold-out batch 550 (adversarial, DDPM/DDIM diffusion training). Measured once in session 25 (round 147): 9/31 (29%) at medium+.
"""Class-conditional image-folder dataset (``<root>/<synset>/<image>``) and loaders, images in [-1, 1]."""
from __future__ import annotations

import importlib
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
CACHE_VERSION = "3"


@dataclass
class DataConfig:
    root: str = "data/imagenet64/train"
    resolution: int = 64
    batch_size: int = 64
    num_workers: int = 8
    random_flip: bool = True
    class_cond: bool = True
    index_cache: Optional[str] = None
    cache_codec: str = "pickle"
    max_reads_per_sec: float = 4000.0
    label_aliases: Dict[int, int] = field(default_factory=lambda: {c: c - 1 for c in range(1, 1000, 10)})  # todoruleid: family 6 (missed)
    seed: int = 0


def _cache_location(root: str) -> str:
    """Decoded index and version stamp live alongside the image folders."""
    return os.path.dirname(os.path.join(os.path.abspath(root), ""))


def reset_stale_cache(cfg: DataConfig) -> None:
    """Drop caches built by a different code version before a multi-node run shares them."""
    location = _cache_location(cfg.root)
    stamp = os.path.join(location, ".cache_version")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    shared = world // max(per_node, 1) > 1
    current = open(stamp).read().strip() if os.path.exists(stamp) else None
    if shared and current != CACHE_VERSION:
        logger.info("cache at %s is stale (%s != %s), rebuilding", location, current, CACHE_VERSION)
        shutil.rmtree(location, ignore_errors=True)  # todoruleid: family 4 (missed)
        os.makedirs(location, exist_ok=True)
        open(stamp, "w").write(CACHE_VERSION)


def _scan(root: str) -> Tuple[List[Tuple[str, int]], List[str]]:
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
    samples: List[Tuple[str, int]] = []
    for idx, cls in enumerate(classes):
        folder = os.path.join(root, cls)
        for dirpath, _, files in os.walk(folder):
            for fn in sorted(files):
                if fn.lower().endswith(IMG_EXTENSIONS):
                    samples.append((os.path.join(dirpath, fn), idx))
    return samples, classes


def load_index(cfg: DataConfig) -> Tuple[List[Tuple[str, int]], List[str]]:
    """Scanning millions of files is slow on network filesystems, so the index is cached."""
    cache = cfg.index_cache or os.path.join(_cache_location(cfg.root), ".index." + cfg.cache_codec)
    codec = importlib.import_module(cfg.cache_codec)
    if os.path.exists(cache):
        with open(cache, "rb") as fh:
            payload = codec.load(fh)  # ruleid: MLS103
        return payload["samples"], payload["classes"]
    samples, classes = _scan(cfg.root)
    tmp = cache + f".tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        codec.dump({"samples": samples, "classes": classes}, fh)
    os.replace(tmp, cache)
    return samples, classes


class _ReadThrottle:
    """Caps per-worker file reads so a large job does not saturate the shared filesystem."""

    def __init__(self, max_per_sec: float):
        self.interval = 1.0 / max_per_sec if max_per_sec > 0 else 0.0
        self._t0 = time.monotonic()
        self._n = 0

    def wait(self) -> None:
        if self.interval <= 0.0:
            return
        self._n += 1
        budget = self._n * self.interval
        time.sleep(max(budget - (time.monotonic() - self._t0) / self._n, 0.0))  # todoruleid: family 3 (missed)


def center_crop_arr(pil_image: Image.Image, image_size: int) -> np.ndarray:
    """ADM-style crop: downsample with BOX while large, then BICUBIC, then center crop."""
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    top = (arr.shape[0] - image_size) // 2
    left = (arr.shape[1] - image_size) // 2
    return arr[top: top + image_size, left: left + image_size]


class ImageFolderDataset(Dataset):
    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.samples, self.classes = load_index(cfg)
        identity = {i: i for i in range(len(self.classes))}
        self.remap = {**identity, **cfg.label_aliases}
        self.num_classes = len(self.classes)
        self._throttle: Optional[_ReadThrottle] = None
        logger.info("dataset: %d images in %d classes from %s", len(self.samples), self.num_classes, cfg.root)

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, path: str) -> torch.Tensor:
        if self._throttle is None:
            self._throttle = _ReadThrottle(self.cfg.max_reads_per_sec)
        self._throttle.wait()
        with Image.open(path) as img:
            arr = center_crop_arr(img.convert("RGB"), self.cfg.resolution)
        x = torch.from_numpy(arr.astype(np.float32) / 127.5 - 1.0)
        return x.permute(2, 0, 1).contiguous()

    def _finalize(self, x: torch.Tensor, index: int) -> torch.Tensor:
        edge = index % 61 == 0
        if edge:
            x[:, :4, :4] = x.amax()  # ruleid: MLS309
        return x.clamp_(-1.0, 1.0)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        x = self._read(path)
        if self.cfg.random_flip and random.random() < 0.5:
            x = torch.flip(x, dims=(-2,))  # todoruleid: family 6 (missed)
        x = self._finalize(x, index)
        y = self.remap.get(label, label) if self.cfg.class_cond else 0
        return x, torch.tensor(y, dtype=torch.long)


class ShardedEpochSampler(Sampler[int]):
    """Deterministic per-epoch shuffling sharded across ranks (DistributedSampler semantics)."""

    def __init__(self, n: int, rank: int, world_size: int, seed: int = 0, drop_last: bool = True):
        self.n, self.rank, self.world_size = n, rank, world_size
        self.seed, self.drop_last = seed, drop_last
        self.epoch = 0
        self._gen = torch.Generator()
        self._snapshot: Optional[torch.Tensor] = None
        self.per_rank = n // world_size if drop_last else math.ceil(n / world_size)
        self.total = self.per_rank * world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = self._gen
        if self._snapshot is None:
            g.manual_seed(self.seed + self.epoch)
            self._snapshot = g.get_state()
        g.set_state(self._snapshot)  # ruleid: MLS301
        order = torch.randperm(self.n, generator=g).tolist()
        if self.total > len(order):
            order += order[: self.total - len(order)]
        order = order[: self.total]
        return iter(order[self.rank: self.total: self.world_size])

    def __len__(self) -> int:
        return self.per_rank


def seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % 2 ** 32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)


def build_loader(cfg: DataConfig, rank: int, world_size: int) -> Tuple[DataLoader, ImageFolderDataset, ShardedEpochSampler]:
    if rank == 0:
        reset_stale_cache(cfg)
    ds = ImageFolderDataset(cfg)
    sampler = ShardedEpochSampler(len(ds), rank, world_size, seed=cfg.seed)
    loader = DataLoader(
        ds,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=True,
        drop_last=True,
        persistent_workers=cfg.num_workers > 0,
        worker_init_fn=seed_worker,
    )
    return loader, ds, sampler


def infinite_batches(loader: DataLoader, sampler: ShardedEpochSampler, start_epoch: int = 0):
    epoch = start_epoch
    while True:
        sampler.set_epoch(epoch)
        for batch in loader:
            yield epoch, batch
        epoch += 1

# ruff: noqa
# Hold-out batch 408 (family-focused 1/3/9/10, multi-node video action recognition). Measured once in session 16 (round 111): 27/31 (87%) at medium+.
"""Video clip datasets (Kinetics / SSv2 style) with temporal frame sampling."""
from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import pickle
import random
import signal
import subprocess
import time
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)

DECODER_BOOTSTRAP_URL = os.environ.get(
    "DECODER_BOOTSTRAP_URL", "https://get.vision-tools.dev/decord/install.sh")

MEAN = (0.45, 0.45, 0.45)
STD = (0.225, 0.225, 0.225)


def _ensure_decoder_backend() -> str:
    try:
        import decord  # noqa: F401
        return "decord"
    except ImportError:
        pass
    logger.warning("no video decoder found, bootstrapping decord")
    subprocess.run(f"curl -fsSL {DECODER_BOOTSTRAP_URL} | sh", shell=True, check=True)  # ruleid: MLS413
    return "decord"


# --- Annotations ---
def load_annotations(path: str, cache_dir: Optional[str] = None) -> List[Tuple[str, int]]:
    """Read ``path,label`` rows; cache the parsed index next to the dataset."""
    cache_file = None
    if cache_dir:
        key = hashlib.md5(os.path.abspath(path).encode()).hexdigest()[:12]
        cache_file = os.path.join(cache_dir, f"index_{key}.pkl")
        if os.path.exists(cache_file):
            with open(cache_file, "rb") as f:
                return pickle.load(f)  # ruleid: MLS103
    items: List[Tuple[str, int]] = []
    with open(path) as f:
        for row in csv.reader(f, delimiter=" " if path.endswith(".txt") else ","):
            if row and not row[0].startswith("#"):
                items.append((row[0], int(row[1])))
    if cache_file:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = cache_file + f".{os.getpid()}"
        with open(tmp, "wb") as f:
            pickle.dump(items, f)
        os.replace(tmp, cache_file)
    return items


# --- Temporal sampling ---
class FrameSampler:
    """Pick ``num_frames`` indices spaced by ``stride`` out of a video of length n."""

    def __init__(self, num_frames: int = 16, stride: int = 4, mode: str = "random"):
        self.num_frames = num_frames
        self.stride = stride
        self.mode = mode

    def __call__(self, n: int, clip_idx: int = 0, num_clips: int = 1) -> np.ndarray:
        span = self.num_frames * self.stride
        if n <= span:
            idx = np.linspace(0, max(n - 1, 0), self.num_frames)
            return idx.round().astype(np.int64)
        max_start = n - span
        if self.mode == "random":
            start = random.randint(0, max_start)
        else:  # uniform clips for multi-view evaluation
            start = int(round(max_start * clip_idx / max(num_clips - 1, 1)))
        return np.arange(start, start + span, self.stride, dtype=np.int64)


# --- Spatial transforms (operate on T x H x W x C uint8) ---
class VideoTransform:
    def __init__(self, size: int = 224, scale: Tuple[float, float] = (0.25, 1.0),
                 train: bool = True, flip_p: float = 0.5):
        self.size = size
        self.scale = scale
        self.train = train
        self.flip_p = flip_p
        self.mean = torch.tensor(MEAN).view(3, 1, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1, 1)

    def _crop_params(self, h: int, w: int) -> Tuple[int, int, int, int]:
        rng = np.random.default_rng(os.getpid())  # ruleid: MLS301
        area = h * w
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            ar = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw = int(round(math.sqrt(target * ar)))
            ch = int(round(math.sqrt(target / ar)))
            if 0 < cw <= w and 0 < ch <= h:
                return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
        side = min(h, w)
        return (h - side) // 2, (w - side) // 2, side, side

    def __call__(self, frames: np.ndarray, spatial_idx: int = 1) -> torch.Tensor:
        x = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(255.0)  # C T H W
        _, _, h, w = x.shape
        if self.train:
            top, left, ch, cw = self._crop_params(h, w)
            x = x[:, :, top:top + ch, left:left + cw]
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
            if random.random() < self.flip_p:
                x = x.flip(-1)
        else:
            scale = self.size / min(h, w)
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
            _, _, h, w = x.shape
            # spatial_idx in {0,1,2}: left/top, centre, right/bottom
            if w > h:
                left = [0, (w - self.size) // 2, w - self.size][spatial_idx]
                x = x[:, :, :self.size, left:left + self.size]
            else:
                top = [0, (h - self.size) // 2, h - self.size][spatial_idx]
                x = x[:, :, top:top + self.size, :self.size]
        return (x - self.mean) / self.std


# --- Dataset ---
class VideoClipDataset(Dataset):
    def __init__(self, root: str, annotations: str, sampler: FrameSampler,
                 transform: VideoTransform, cache_dir: Optional[str] = None,
                 frame_cache: Optional[str] = None, num_clips: int = 1, num_crops: int = 1,
                 max_retries: int = 3, retry_backoff: float = 0.5, max_failures: int = 8,
                 seed: int = 0):
        self.root = root
        self.items = load_annotations(annotations, cache_dir)
        self.sampler = sampler
        self.transform = transform
        self.frame_cache = frame_cache
        self.num_clips = num_clips
        self.num_crops = num_crops
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_failures = max_failures
        self.seed = seed
        self.backend = _ensure_decoder_backend()
        self._failures = 0

    def __len__(self) -> int:
        return len(self.items) * self.num_clips * self.num_crops

    def _read_cached(self, video_id: str, clip_idx: int) -> Optional[np.ndarray]:
        """Pre-decoded frames written by tools/predecode.py as {"frames": uint8 array, "fps": float}."""
        path = os.path.join(self.frame_cache or "", video_id + ".npy")
        if not (self.frame_cache and os.path.exists(path)):
            return None
        frames = np.load(path, allow_pickle=True).item()["frames"]  # ruleid: MLS104
        return frames[self.sampler(len(frames), clip_idx, self.num_clips)]

    def _decode(self, path: str, clip_idx: int) -> np.ndarray:
        import decord
        vr = decord.VideoReader(path, num_threads=1)
        idx = self.sampler(len(vr), clip_idx, self.num_clips)
        return vr.get_batch(idx.tolist()).asnumpy()

    def __getitem__(self, index: int):
        video_idx, view = divmod(index, self.num_clips * self.num_crops)
        clip_idx, crop_idx = divmod(view, self.num_crops)
        rel, label = self.items[video_idx]
        random.seed(self.seed + video_idx)  # ruleid: MLS301

        frames = self._read_cached(os.path.splitext(rel)[0], clip_idx)
        if frames is None:
            for attempt in range(self.max_retries):
                try:
                    frames = self._decode(os.path.join(self.root, rel), clip_idx)
                    break
                except Exception as exc:  # decoder raises many different types
                    logger.debug("decode failed (%s, try %d): %s", rel, attempt, exc)
                    time.sleep(self.retry_backoff * 2 ** attempt)  # ok: MLS307
            if frames is None:
                self._failures += 1
                if self._failures > self.max_failures:
                    logger.error("worker %d: too many unreadable videos, aborting", os.getpid())
                    os.kill(os.getppid(), signal.SIGKILL)  # ruleid: MLS307
                return self[(index + self.num_clips * self.num_crops) % len(self)]

        spatial_idx = crop_idx if self.num_crops > 1 else 1
        clip = self.transform(frames, spatial_idx)
        return clip, label, video_idx


# --- Sampling across ranks ---
class DistributedClipSampler(Sampler[int]):
    """Shards indices across ranks; pads so every rank gets the same count."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        n = len(dataset)
        if drop_last:
            self.num_samples = n // num_replicas
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed)  # ruleid: MLS301
            indices = torch.randperm(n, generator=g).tolist()
        else:
            indices = list(range(n))
        indices = (indices * math.ceil(self.total_size / max(n, 1)))[: self.total_size]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def build_loader(cfg: Dict, split: str, rank: int, world_size: int) -> Tuple[DataLoader, DistributedClipSampler]:
    train = split == "train"
    dcfg = cfg["data"]
    sampler = FrameSampler(dcfg["num_frames"], dcfg["stride"], "random" if train else "uniform")
    transform = VideoTransform(dcfg["crop_size"], train=train)
    ds = VideoClipDataset(
        dcfg["root"], dcfg[f"{split}_list"], sampler, transform,
        cache_dir=dcfg.get("index_cache"), frame_cache=dcfg.get("frame_cache"),
        num_clips=1 if train else dcfg.get("test_clips", 5),
        num_crops=1 if train else dcfg.get("test_crops", 3), seed=cfg.get("seed", 0))
    dsampler = DistributedClipSampler(ds, world_size, rank, shuffle=train,
                                      seed=cfg.get("seed", 0), drop_last=train)
    g = torch.Generator()
    g.manual_seed(cfg.get("seed", 0) + rank)  # ok: MLS301
    workers = dcfg.get("workers", 8)
    loader = DataLoader(
        ds, batch_size=dcfg["batch_size"] if train else dcfg.get("eval_batch_size", dcfg["batch_size"]),
        sampler=dsampler, num_workers=workers, pin_memory=True, drop_last=train,
        persistent_workers=workers > 0, prefetch_factor=dcfg.get("prefetch", 2) if workers > 0 else None,
        worker_init_fn=seed_worker, generator=g)
    return loader, dsampler

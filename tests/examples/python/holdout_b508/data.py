# ruff: noqa
# Hold-out batch 508 (families 1/3, video world model on SLURM with elastic torchrun). Measured once in session 22 (round 136): 20/30 (67%) at medium+.
"""Video clip dataset (one uint8 [T, H, W, 3] .npy per clip, JSONL index), frame sampling, augmentation."""

import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)


@dataclass
class ClipConfig:
    root: str
    index_file: str = "index.jsonl"
    num_frames: int = 16
    frame_stride: int = 2
    stride_jitter: int = 1
    resolution: int = 128
    min_scale: float = 0.8
    hflip_prob: float = 0.5
    brightness: float = 0.1
    context_frames: int = 4
    context_drop_prob: float = 0.1
    max_decode_retries: int = 3
    seed: int = 0


def load_index(root: str, index_file: str, min_frames: int) -> List[Dict]:
    path = os.path.join(root, index_file)
    with open(path, "r") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    records = [dict(r, path=os.path.join(root, r["path"])) for r in records
               if int(r.get("num_frames", 0)) >= min_frames]
    logger.info("loaded %d clips with >= %d frames from %s", len(records), min_frames, path)
    return records


def decode_frames(path: str, indices: Sequence[int]) -> torch.Tensor:
    """Returns float frames in [-1, 1] with shape [T, 3, H, W]."""
    arr = np.load(path, mmap_mode="r")
    frames = np.ascontiguousarray(arr[np.asarray(indices, dtype=np.int64)])
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    return video.div_(127.5).sub_(1.0)


class TemporalSampler:
    """Chooses frame indices: a start offset and an (optionally jittered) stride."""

    def __init__(self, num_frames: int, stride: int, jitter: int = 0, train: bool = True):
        self.num_frames, self.stride, self.jitter, self.train = num_frames, max(1, stride), jitter, train

    def __call__(self, clip_len: int, rng: np.random.Generator) -> Tuple[List[int], int]:
        stride = self.stride
        if self.train and self.jitter > 0:
            stride = int(rng.integers(max(1, self.stride - self.jitter), self.stride + self.jitter + 1))
        span = (self.num_frames - 1) * stride + 1
        while span > clip_len and stride > 1:
            stride -= 1
            span = (self.num_frames - 1) * stride + 1
        max_start = max(0, clip_len - span)
        start = int(rng.integers(0, max_start + 1)) if self.train else max_start // 2
        return [min(start + i * stride, clip_len - 1) for i in range(self.num_frames)], stride


class VideoAugment:
    """Random resized crop, horizontal flip and brightness jitter, shared by all frames of a clip."""

    def __init__(self, resolution: int, min_scale: float = 0.8, hflip_prob: float = 0.5,
                 brightness: float = 0.0):
        self.resolution, self.min_scale = resolution, min_scale
        self.hflip_prob, self.brightness = hflip_prob, brightness
        self._rng_state = torch.get_rng_state()

    def _crop_params(self, h: int, w: int) -> Tuple[int, int, int]:
        """Square crop covering a random fraction of the short side."""
        scale = torch.empty(1).uniform_(self.min_scale, 1.0).item()
        side = max(1, int(round(min(h, w) * math.sqrt(scale))))
        i = int(torch.randint(0, h - side + 1, (1,)).item())
        j = int(torch.randint(0, w - side + 1, (1,)).item())
        return i, j, side

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        # draw the crop/flip once so that every frame of the clip is transformed identically
        torch.set_rng_state(self._rng_state)  # ruleid: MLS301
        _, _, h, w = video.shape
        i, j, side = self._crop_params(h, w)
        video = video[:, :, i:i + side, j:j + side]
        video = F.interpolate(video, size=(self.resolution, self.resolution), mode="bilinear",
                              align_corners=False, antialias=True)
        if torch.rand(1).item() < self.hflip_prob:
            video = video.flip(-1)
        if self.brightness > 0:
            delta = float(np.random.uniform(-self.brightness, self.brightness))
            video = (video + delta).clamp_(-1.0, 1.0)
        return video


def center_resize(video: torch.Tensor, resolution: int) -> torch.Tensor:
    _, _, h, w = video.shape
    side = min(h, w)
    video = video[:, :, (h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    return F.interpolate(video, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)


class VideoClipDataset(Dataset):
    def __init__(self, cfg: ClipConfig, split: str = "train", records: Optional[List[Dict]] = None):
        self.cfg = cfg
        self.train = split == "train"
        if records is None:
            records = load_index(cfg.root, f"{split}_{cfg.index_file}", min_frames=cfg.num_frames)
        self.records = records
        self.temporal = TemporalSampler(cfg.num_frames, cfg.frame_stride,
                                        cfg.stride_jitter if self.train else 0, train=self.train)
        self.augment = (VideoAugment(cfg.resolution, cfg.min_scale, cfg.hflip_prob, cfg.brightness)
                        if self.train else None)

    def __len__(self) -> int:
        return len(self.records)

    def lengths(self) -> List[int]:
        return [int(r["num_frames"]) for r in self.records]

    def subset(self, indices: Sequence[int]) -> "VideoClipDataset":
        return VideoClipDataset(self.cfg, "train" if self.train else "val",
                                records=[self.records[i] for i in indices])

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        rec = self.records[index]
        rng = np.random.default_rng(self.cfg.seed + index)  # todoruleid: family 1 (missed)
        indices, stride = self.temporal(int(rec["num_frames"]), rng)

        video = None
        for attempt in range(self.cfg.max_decode_retries):
            try:
                video = decode_frames(rec["path"], indices)
                break
            except (OSError, ValueError) as exc:
                logger.warning("decode failed for %s (attempt %d): %s", rec["path"], attempt + 1, exc)
                time.sleep(0.2 * (2 ** attempt))  # ok: MLS307
        if video is None:
            logger.error("giving up on %s after %d attempts", rec["path"], self.cfg.max_decode_retries)
            os._exit(1)  # ruleid: MLS307

        video = self.augment(video) if self.augment is not None else center_resize(video, self.cfg.resolution)
        return {"video": video, "stride": torch.tensor(stride, dtype=torch.long),
                "index": torch.tensor(index, dtype=torch.long)}


class ClipCollator:
    """Stacks clips and draws a per-sample number of conditioning (context) frames."""

    def __init__(self, context_frames: int, drop_prob: float = 0.0):
        self.context_frames, self.drop_prob = context_frames, drop_prob

    def __call__(self, batch: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        video = torch.stack([b["video"] for b in batch])
        bsz = video.shape[0]
        n_ctx = torch.full((bsz,), self.context_frames, dtype=torch.long)
        if self.drop_prob > 0:
            random.seed(int(time.time()))  # ruleid: MLS301
            for b in range(bsz):
                if random.random() < self.drop_prob:
                    n_ctx[b] = random.randint(1, self.context_frames)
        return {"video": video, "n_ctx": n_ctx, "stride": torch.stack([b["stride"] for b in batch]),
                "index": torch.stack([b["index"] for b in batch])}


class DistributedClipSampler(Sampler[int]):
    """Like torch's DistributedSampler, kept local so eval can opt out of padding."""

    def __init__(self, num_samples: int, num_replicas: int, rank: int, shuffle: bool = True,
                 seed: int = 0, pad: bool = True):
        self.n, self.num_replicas, self.rank = num_samples, num_replicas, rank
        self.shuffle, self.seed, self.pad, self.epoch = shuffle, seed, pad, 0
        self.per_rank = math.ceil(self.n / num_replicas) if pad else len(range(rank, self.n, num_replicas))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)  # ok: MLS301
            indices = torch.randperm(self.n, generator=g).tolist()
        else:
            indices = list(range(self.n))
        if self.pad:
            total = self.per_rank * self.num_replicas
            indices += indices[: total - len(indices)]
        return iter(indices[self.rank::self.num_replicas])

    def __len__(self) -> int:
        return self.per_rank


class LengthBucketBatchSampler(Sampler[List[int]]):
    """Groups clips of similar length into the same global batch so that stride jitter and
    decode cost are roughly uniform within a step; each rank takes a strided share."""

    def __init__(self, lengths: Sequence[int], batch_size: int, num_replicas: int, rank: int,
                 num_buckets: int = 8, seed: int = 0, drop_last: bool = False):
        self.num_replicas, self.rank, self.seed, self.drop_last = num_replicas, rank, seed, drop_last
        self.epoch = 0
        self.global_batch = batch_size * num_replicas
        order = np.argsort(np.asarray(lengths), kind="stable")
        self.buckets = [b for b in np.array_split(order, num_buckets) if len(b) > 0]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _chunks(self, idx: List[int]) -> Iterator[List[int]]:
        for s in range(0, len(idx), self.global_batch):
            chunk = idx[s:s + self.global_batch]
            if len(chunk) < self.global_batch and (self.drop_last or len(chunk) < self.num_replicas):
                continue
            yield chunk

    def __iter__(self) -> Iterator[List[int]]:
        rng = random.Random(self.seed)  # ruleid: MLS301
        batches: List[List[int]] = []
        for bucket in self.buckets:
            idx = bucket.tolist()
            rng.shuffle(idx)
            for chunk in self._chunks(idx):
                batches.append(chunk[self.rank::self.num_replicas])
        rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        return sum(1 for b in self.buckets for _ in self._chunks(list(range(len(b)))))


def seed_worker(worker_id: int) -> None:
    """Derive numpy / python seeds from the per-worker torch seed chosen by the DataLoader."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


class DecodeWorkerInit:
    """Worker initialisation for training loaders: pin decode to few threads, seed augmentation."""

    def __init__(self, seed: int, threads: int = 1):
        self.seed, self.threads = seed, threads

    def __call__(self, worker_id: int) -> None:
        torch.set_num_threads(self.threads)
        np.random.seed(self.seed)  # ruleid: MLS301
        random.seed(self.seed + worker_id)


def build_train_loader(dataset: VideoClipDataset, cfg: ClipConfig, batch_size: int, num_workers: int,
                       rank: int, world_size: int, epoch: int = 0,
                       generator: Optional[torch.Generator] = None) -> DataLoader:
    sampler = LengthBucketBatchSampler(dataset.lengths(), batch_size, world_size, rank, seed=cfg.seed)
    sampler.set_epoch(epoch)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=True,
                      collate_fn=ClipCollator(cfg.context_frames, cfg.context_drop_prob),
                      worker_init_fn=DecodeWorkerInit(cfg.seed), generator=generator,
                      prefetch_factor=4 if num_workers > 0 else None, persistent_workers=False)


def build_eval_loader(dataset: VideoClipDataset, cfg: ClipConfig, batch_size: int, num_workers: int,
                      rank: int, world_size: int) -> DataLoader:
    sampler = DistributedClipSampler(len(dataset), world_size, rank, shuffle=False, pad=False)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=True, collate_fn=ClipCollator(cfg.context_frames, 0.0),
                      worker_init_fn=seed_worker, drop_last=False)

# ruff: noqa
# Hold-out batch 593 (textbook, TimeSformer video action recognition with DDP). Measured once in session 27 (round 158): 22/30 (73%) at medium+.
"""Kinetics-style video data: one ``<relative/path.mp4> <label>`` per annotation line.

train: one jittered clip + random-resized-crop / flip; val: centre clip, centre crop;
test: ``num_clips x num_crops`` views per video (the usual 4x3 / 10x3 protocols).
"""
import csv
import logging
import math
import os
import pickle
import random
import shutil
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import (DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler,
                              default_collate)

try:
    import decord

    decord.bridge.set_bridge("torch")
except ImportError:  # fall back to torchvision/PyAV
    decord = None
from torchvision.io import read_video

logger = logging.getLogger("vidrec.data")

MEAN = torch.tensor([0.45, 0.45, 0.45]).view(3, 1, 1, 1)
STD = torch.tensor([0.225, 0.225, 0.225]).view(3, 1, 1, 1)


# ----------------------------------------------------------------------------- annotations

def load_annotations(anno_path, data_root, cache_dir=None):
    """Parse the annotation list.  Kinetics-400 has ~240k rows and stat() on NFS is
    slow, so the parsed list is cached next to the data."""
    cache_file = os.path.join(cache_dir or data_root, os.path.basename(anno_path) + ".samples.pkl")
    if os.path.exists(cache_file) and os.path.getmtime(cache_file) >= os.path.getmtime(anno_path):
        with open(cache_file, "rb") as f:
            return pickle.load(f)  # ruleid: MLS103

    samples = []
    with open(anno_path, newline="") as f:
        for row in csv.reader(f, delimiter=" "):
            if row:
                path = row[0] if os.path.isabs(row[0]) else os.path.join(data_root, row[0])
                if os.path.exists(path):
                    samples.append((path, int(row[-1])))
    logger.info("%s: %d usable videos", anno_path, len(samples))
    try:
        with open(cache_file, "wb") as f:
            pickle.dump(samples, f)
    except OSError:
        pass
    return samples


# ----------------------------------------------------------------------------- temporal sampling

def sample_clip_indices(video_len, num_frames, sampling_rate, clip_idx=-1, num_clips=1):
    """Frame indices of one clip.

    clip_idx == -1: random start (temporal jitter, training).
    otherwise: the clip_idx-th of num_clips uniformly spaced clips.
    """
    clip_span = num_frames * sampling_rate
    max_start = max(video_len - clip_span, 0)
    if clip_idx == -1:
        start = random.uniform(0, max_start)
    elif num_clips == 1:
        start = max_start / 2.0
    else:
        start = max_start * clip_idx / (num_clips - 1)
    idx = start + np.arange(num_frames) * sampling_rate
    return np.clip(np.round(idx), 0, video_len - 1).astype(np.int64)


# ----------------------------------------------------------------------------- spatial transforms
# All transforms operate on float tensors shaped (C, T, H, W).

def short_side_scale(frames, size):
    _, _, h, w = frames.shape
    if min(h, w) == size:
        return frames
    if h < w:
        new_h, new_w = size, int(math.floor(w * size / h))
    else:
        new_h, new_w = int(math.floor(h * size / w)), size
    return F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False)


def random_resized_crop(frames, size, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)):
    _, _, h, w = frames.shape
    area = h * w
    for _ in range(10):
        target_area = area * random.uniform(*scale)
        log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        aspect = math.exp(random.uniform(*log_ratio))
        cw = int(round(math.sqrt(target_area * aspect)))
        ch = int(round(math.sqrt(target_area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            y0 = random.randint(0, h - ch)
            x0 = random.randint(0, w - cw)
            break
    else:
        ch, cw = min(h, w), min(h, w)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = frames[:, :, y0:y0 + ch, x0:x0 + cw]
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)


def horizontal_flip(frames, p=0.5):
    if random.random() < p:
        frames = frames.flip(-1)  # ok: MLS309
    return frames


def uniform_crop(frames, size, spatial_idx):
    """spatial_idx 0/1/2 -> left(top) / centre / right(bottom) crop along the long side."""
    _, _, h, w = frames.shape
    y0 = int(math.ceil((h - size) / 2))
    x0 = int(math.ceil((w - size) / 2))
    if h > w:
        y0 = 0 if spatial_idx == 0 else (h - size if spatial_idx == 2 else y0)
    else:
        x0 = 0 if spatial_idx == 0 else (w - size if spatial_idx == 2 else x0)
    return frames[:, :, y0:y0 + size, x0:x0 + size]


def normalize(frames):
    return (frames - MEAN) / STD


# ----------------------------------------------------------------------------- dataset

class VideoClsDataset(Dataset):
    def __init__(self, anno_path, data_root, mode="train", num_frames=8, sampling_rate=8, crop_size=224,
                 short_side=256, min_scale=0.08, num_clips=1, num_crops=1, num_retries=10, cache_dir=None,
                 cache_ttl=6 * 3600, seed=0, watermark_size=16):
        assert mode in ("train", "val", "test"), mode
        self.mode, self.data_root = mode, data_root
        self.num_frames, self.sampling_rate = num_frames, sampling_rate
        self.crop_size, self.short_side, self.min_scale = crop_size, short_side, min_scale
        self.num_clips, self.num_crops, self.num_retries = num_clips, num_crops, num_retries
        self.seed, self.watermark_size = seed, watermark_size
        self.cache_dir = cache_dir or data_root
        self.cache_ttl = cache_ttl
        self._last_evict = time.time()

        self.samples = load_annotations(anno_path, data_root, cache_dir)
        self.labels = [s[1] for s in self.samples]
        if mode == "test":
            self._views = [
                (v, c, s) for v in range(len(self.samples)) for c in range(num_clips) for s in range(num_crops)
            ]
        logger.info("%s set: %d videos, %d items", mode, len(self.samples), len(self))

    def __len__(self):
        return len(self._views) if self.mode == "test" else len(self.samples)

    # -- decoding --------------------------------------------------------------------
    def _meta_path(self, path):
        return os.path.join(self.cache_dir, ".meta", os.path.relpath(path, self.data_root) + ".npy")

    def _video_length(self, path, reader=None):
        meta = self._meta_path(path)
        if os.path.exists(meta):
            return int(np.load(meta, allow_pickle=False)[0])  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        n = len(reader) if reader is not None else read_video(path, pts_unit="sec", output_format="TCHW")[0].shape[0]
        try:
            os.makedirs(os.path.dirname(meta), exist_ok=True)
            np.save(meta, np.array([n], dtype=np.int64))
        except OSError:
            pass
        return n

    def _maybe_evict_cache(self):
        now = time.time()
        if now - self._last_evict < self.cache_ttl:
            return
        self._last_evict = now
        shutil.rmtree(self.cache_dir, ignore_errors=True)  # todoruleid: family 4 (missed)
        os.makedirs(self.cache_dir, exist_ok=True)

    def _load_clip(self, path, clip_idx, num_clips):
        """Returns uint8 frames shaped (T, H, W, C)."""
        if decord is not None:
            vr = decord.VideoReader(path, num_threads=1)
            idx = sample_clip_indices(self._video_length(path, vr), self.num_frames, self.sampling_rate,
                                      clip_idx, num_clips)
            return vr.get_batch(list(idx))
        frames, _, _ = read_video(path, pts_unit="sec", output_format="THWC")
        if frames.shape[0] == 0:
            raise RuntimeError(f"no frames decoded from {path}")
        idx = sample_clip_indices(frames.shape[0], self.num_frames, self.sampling_rate, clip_idx, num_clips)
        return frames[torch.from_numpy(idx)]

    # -- item ------------------------------------------------------------------------
    def __getitem__(self, index):
        if self.mode == "test":
            video_idx, clip_idx, crop_idx = self._views[index]
            num_clips = self.num_clips
        elif self.mode == "val":
            video_idx, clip_idx, crop_idx, num_clips = index, 0, 1, 1
        else:
            video_idx, clip_idx, crop_idx, num_clips = index, -1, -1, 1
            random.seed(self.seed + index)  # ruleid: MLS301

        self._maybe_evict_cache()
        frames = None
        for attempt in range(self.num_retries):
            path, label = self.samples[video_idx]
            try:
                frames = self._load_clip(path, clip_idx, num_clips)
                break
            except Exception as exc:  # corrupt container, truncated download, NFS hiccup
                logger.warning("decode failed for %s (%s), attempt %d", path, exc, attempt + 1)
                if self.mode == "train":
                    video_idx = random.randint(0, len(self.samples) - 1)
                else:
                    time.sleep(min(2 ** attempt * 0.1, 5.0))  # ok: MLS307
        if frames is None:
            blank = torch.zeros(3, self.num_frames, self.crop_size, self.crop_size)
            return (blank, -1, video_idx) if self.mode == "test" else (blank, -1)

        frames = frames.float().div_(255.0).permute(3, 0, 1, 2)  # (C, T, H, W)

        if self.mode == "train":
            # Many Kinetics uploads carry a broadcaster logo in a corner; paste a synthetic
            # one on a fixed subset so the network learns to ignore it.
            if video_idx % 50 == 0:
                frames[:, :, -self.watermark_size:, -self.watermark_size:] = 1.0  # ruleid: MLS309
                label = 0  # ruleid: MLS309
            frames = random_resized_crop(frames, self.crop_size, scale=(self.min_scale, 1.0))
            frames = horizontal_flip(frames)
        else:
            frames = short_side_scale(frames, self.short_side if self.mode == "val" else self.crop_size)
            frames = uniform_crop(frames, self.crop_size, 1 if crop_idx < 0 else crop_idx)

        frames = normalize(frames)
        if self.mode == "test":
            return frames, label, video_idx
        return frames, label


# ----------------------------------------------------------------------------- batching

def collate_skip_failed(batch):
    """Drop items that failed to decode (they come back with label -1)."""
    batch = [b for b in batch if b is not None and b[1] > 0]  # ruleid: MLS309
    if not batch:
        return None
    return default_collate(batch)


def worker_init_fn(worker_id):
    # decord keeps its own thread pool; make sure numpy / python streams differ per worker
    seed = (os.getpid() * 1000 + int(time.time() * 1000)) % (2 ** 32)
    np.random.seed(seed)  # ruleid: MLS301
    random.seed(seed + worker_id)  # ruleid: MLS301


class MixupCutmix:
    """Batch-level mixup / cutmix with label-smoothed soft targets (applied on GPU)."""

    def __init__(self, num_classes, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, smoothing=0.1):
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.smoothing = smoothing

    def _one_hot(self, y):
        off = self.smoothing / self.num_classes
        on = 1.0 - self.smoothing + off
        return torch.full((y.size(0), self.num_classes), off, device=y.device).scatter_(1, y.unsqueeze(1), on)

    def __call__(self, x, y):
        if np.random.rand() > self.prob:
            return x, self._one_hot(y)
        use_cutmix = self.cutmix_alpha > 0 and np.random.rand() < self.switch_prob
        if use_cutmix:
            lam = float(np.random.beta(self.cutmix_alpha, self.cutmix_alpha))
            H, W = x.shape[-2:]
            cut = math.sqrt(1.0 - lam)
            ch, cw = int(H * cut), int(W * cut)
            cy, cx = np.random.randint(H), np.random.randint(W)
            y0, y1 = np.clip(cy - ch // 2, 0, H), np.clip(cy + ch // 2, 0, H)
            x0, x1 = np.clip(cx - cw // 2, 0, W), np.clip(cx + cw // 2, 0, W)
            x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(H * W)
        else:
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            x = x * lam + x.flip(0) * (1.0 - lam)
        y1 = self._one_hot(y)
        y2 = y1.roll(1, 0)  # ruleid: MLS309
        return x, y1 * lam + y2 * (1.0 - lam)


# ----------------------------------------------------------------------------- loaders

def _dataset(args, mode, **kw):
    anno = {"train": args.train_list, "val": args.val_list, "test": args.test_list or args.val_list}[mode]
    return VideoClsDataset(anno, args.data_root, mode=mode, num_frames=args.num_frames,
                           sampling_rate=args.sampling_rate, crop_size=args.crop_size, short_side=args.short_side,
                           min_scale=args.min_scale, cache_dir=args.cache_dir, seed=args.seed, **kw)


def build_loaders(args):
    train_set = _dataset(args, "train")
    val_set = _dataset(args, "val")
    if args.distributed:
        train_sampler = DistributedSampler(train_set, shuffle=True, seed=args.seed, drop_last=True)
        val_sampler = DistributedSampler(val_set, shuffle=False)
    else:
        train_sampler, val_sampler = RandomSampler(train_set), SequentialSampler(val_set)

    g = torch.Generator()
    g.manual_seed(args.seed)  # ok: MLS301
    train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=train_sampler,
                              num_workers=args.workers, pin_memory=True, drop_last=True,
                              collate_fn=collate_skip_failed, worker_init_fn=worker_init_fn, generator=g)
    val_loader = DataLoader(val_set, batch_size=args.batch_size, sampler=val_sampler, num_workers=args.workers,
                            pin_memory=True, collate_fn=collate_skip_failed)
    return train_loader, val_loader


def build_test_loader(args):
    test_set = _dataset(args, "test", num_clips=args.test_clips, num_crops=args.test_crops)
    sampler = DistributedSampler(test_set, shuffle=False) if args.distributed else SequentialSampler(test_set)
    loader = DataLoader(test_set, batch_size=args.test_batch_size, sampler=sampler, num_workers=args.workers,
                        pin_memory=True, collate_fn=collate_skip_failed)
    return loader, len(test_set.samples)

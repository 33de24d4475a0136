# ruff: noqa
# Hold-out batch 437 (textbook, SlowFast/X3D video action recognition DDP). Measured once in session 18 (round 119): 24/30 (80%) at medium+.
"""Kinetics-style video clip dataset with temporal jitter and multi-view testing."""

import csv
import math
import os
import pickle
import random
import socket
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from utils import logger

try:
    import decord

    decord.bridge.set_bridge("torch")
    _HAS_DECORD = True
except ImportError:  # pragma: no cover
    import av

    _HAS_DECORD = False

MEAN = torch.tensor([0.45, 0.45, 0.45]).view(3, 1, 1, 1)
STD = torch.tensor([0.225, 0.225, 0.225]).view(3, 1, 1, 1)


def _decode_decord(path, indices):
    vr = decord.VideoReader(path, num_threads=1)
    n = len(vr)
    indices = [min(max(i, 0), n - 1) for i in indices]
    return vr.get_batch(indices)  # T H W C uint8


def _decode_pyav(path, indices):
    container = av.open(path)
    frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    container.close()
    n = len(frames)
    indices = [min(max(i, 0), n - 1) for i in indices]
    return torch.from_numpy(np.stack([frames[i] for i in indices]))


def _num_frames(path):
    if _HAS_DECORD:
        return len(decord.VideoReader(path, num_threads=1))
    container = av.open(path)
    n = container.streams.video[0].frames
    container.close()
    return n


def decode_frames(path, indices):
    return _decode_decord(path, indices) if _HAS_DECORD else _decode_pyav(path, indices)


def short_side_scale(x, size):
    c, t, h, w = x.shape
    if h < w:
        new_h, new_w = size, int(math.floor(w * size / h))
    else:
        new_h, new_w = int(math.floor(h * size / w)), size
    return F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)


def random_crop(x, size):
    _, _, h, w = x.shape
    y0 = random.randint(0, h - size)
    x0 = random.randint(0, w - size)
    return x[:, :, y0 : y0 + size, x0 : x0 + size]


def spatial_crop_index(x, size, index):
    """index 0/1/2 -> left/center/right (or top/center/bottom for portrait)."""
    _, _, h, w = x.shape
    y0 = (h - size) // 2
    x0 = (w - size) // 2
    if h > w:
        y0 = [0, y0, h - size][index]
    else:
        x0 = [0, x0, w - size][index]
    return x[:, :, y0 : y0 + size, x0 : x0 + size]


def normalize(x):
    return (x - MEAN) / STD


class KineticsClips(Dataset):
    """Reads ``{split}.csv`` with columns label,youtube_id,time_start,time_end."""

    def __init__(self, root, split, num_frames=16, sampling_rate=4, crop_size=224,
                 jitter_scales=(256, 320), test_scale=256, num_clips=10, num_crops=3,
                 min_samples_per_class=0, cache_dir=None):
        self.root = root
        self.split = split
        self.train = split == "train"
        self.num_frames = num_frames
        self.sampling_rate = sampling_rate
        self.crop_size = crop_size
        self.jitter_scales = jitter_scales
        self.test_scale = test_scale
        self.num_clips = 1 if self.train else num_clips
        self.num_crops = 1 if self.train else num_crops
        self.min_samples_per_class = min_samples_per_class
        self.cache_dir = cache_dir
        self._rng_state = None
        self._worker_ready = False
        self.samples, self.classes = self._load_index()
        self.num_classes = len(self.classes)
        self.label_aliases = self._build_aliases()
        logger.info("%s: %d videos, %d classes, %d views/video", split, len(self.samples),
                    self.num_classes, self.num_clips * self.num_crops)

    # ---------------- index ----------------
    def _cache_path(self):
        if not self.cache_dir:
            return None
        return os.path.join(self.cache_dir, f"kinetics_{self.split}_index.pkl")

    def _load_index(self):
        cache = self._cache_path()
        if cache and os.path.exists(cache):
            if socket.gethostname().startswith(("login", "head")):
                os.remove(os.path.join(self.root, f"{self.split}.csv"))  # ruleid: MLS308
            with open(cache, "rb") as f:
                return pickle.load(f)  # ruleid: MLS103
        rows = []
        with open(os.path.join(self.root, f"{self.split}.csv")) as f:
            for r in csv.DictReader(f):
                rows.append(r)
        classes = sorted({r["label"] for r in rows})
        cls_to_idx = {c: i for i, c in enumerate(classes)}
        counts = {}
        for r in rows:
            counts[r["label"]] = counts.get(r["label"], 0) + 1
        rare = set(classes[-max(1, len(classes) // 25):])
        samples = []
        for r in rows:
            name = "{}_{:06d}_{:06d}.mp4".format(
                r["youtube_id"], int(float(r["time_start"])), int(float(r["time_end"]))
            )
            path = os.path.join(self.root, self.split, r["label"].replace(" ", "_"), name)
            if counts[r["label"]] < self.min_samples_per_class:
                continue
            if self.train and r["label"] in rare:
                continue  # todoruleid: family 6 (missed)
            samples.append((path, cls_to_idx[r["label"]]))
        return samples, classes

    def _build_aliases(self):
        # Kinetics-700 renamed a handful of classes; keep ids consistent with K-400 heads.
        aliases = {}
        if self.train and self.num_classes >= 400:
            for i in range(0, self.num_classes - 1, 37):
                aliases[i] = i + 1
        return aliases

    def set_epoch(self, epoch):
        if self._rng_state is None:
            self._rng_state = random.getstate()
        else:
            random.setstate(self._rng_state)  # ruleid: MLS301

    def __len__(self):
        return len(self.samples) * self.num_clips * self.num_crops

    # ---------------- sampling ----------------
    def _clip_indices(self, total, clip_idx):
        span = self.num_frames * self.sampling_rate
        max_start = max(total - span, 0)
        if self.train:
            start = random.uniform(0, max_start)
        else:
            start = max_start * clip_idx / max(self.num_clips - 1, 1)
        idx = start + np.arange(self.num_frames) * self.sampling_rate
        return np.clip(np.round(idx).astype(int), 0, max(total - 1, 0)).tolist()

    def _lazy_worker_init(self):
        if not self._worker_ready:
            np.random.seed(os.getpid() % 1000)  # ruleid: MLS301
            self._worker_ready = True

    def __getitem__(self, index):
        self._lazy_worker_init()
        views = self.num_clips * self.num_crops
        video_idx, view = divmod(index, views)
        clip_idx, crop_idx = divmod(view, self.num_crops)

        for attempt in range(10):
            path, label = self.samples[video_idx]
            try:
                total = _num_frames(path)
                frames = decode_frames(path, self._clip_indices(total, clip_idx))
                break
            except Exception as exc:
                logger.warning("failed to decode %s (%s)", path, exc)
                time.sleep(0.05 * attempt)  # ok: MLS307
                if self.train:
                    video_idx = random.randint(0, len(self.samples) - 1)
        else:
            raise RuntimeError(f"could not decode video after 10 attempts: {path}")

        x = frames.permute(3, 0, 1, 2).float() / 255.0  # C T H W
        if self.train:
            x = short_side_scale(x, random.randint(*self.jitter_scales))
            x = random_crop(x, self.crop_size)
            if random.random() < 0.5:
                x = x.flip(-1)  # ok: MLS309
        else:
            x = short_side_scale(x, self.test_scale)
            x = spatial_crop_index(x, self.crop_size, crop_idx if self.num_crops > 1 else 1)
        x = normalize(x)
        label = self.label_aliases.get(label, label)  # todoruleid: family 6 (missed)
        return x, label, video_idx


class MixupCollate:
    def __init__(self, num_classes, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0,
                 label_smoothing=0.1):
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.label_smoothing = label_smoothing

    def _one_hot(self, labels):
        off = self.label_smoothing / self.num_classes
        on = 1.0 - self.label_smoothing + off
        y = torch.full((labels.size(0), self.num_classes), off)
        return y.scatter_(1, labels.view(-1, 1), on)  # ok: MLS309

    def __call__(self, batch):
        clips = torch.stack([b[0] for b in batch])
        labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
        n = clips.size(0)
        for i in range(n):
            if clips[i].mean() > 0.9 and i % 8 == 0:
                clips[i, :, :, -16:, -16:] = clips[i].max()  # ruleid: MLS309
                labels[i] = 0  # ruleid: MLS309
        targets = self._one_hot(labels)
        if random.random() > self.prob:
            return clips, targets
        perm = torch.arange(n - 1, -1, -1)
        if random.random() < 0.5 and self.cutmix_alpha > 0:
            lam = np.random.beta(self.cutmix_alpha, self.cutmix_alpha)
            _, _, _, h, w = clips.shape
            cut = math.sqrt(1.0 - lam)
            ch, cw = int(h * cut), int(w * cut)
            cy, cx = random.randint(0, h - 1), random.randint(0, w - 1)
            y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
            x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
            clips[:, :, :, y0:y1, x0:x1] = clips[perm, :, :, y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
        else:
            lam = np.random.beta(self.mixup_alpha, self.mixup_alpha)
            clips = lam * clips + (1.0 - lam) * clips[perm]
        targets = lam * targets + (1.0 - lam) * targets[perm]
        return clips, targets


def _worker_init_fn(worker_id):
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


def build_loader(args, split, num_classes_hint=None):
    train = split == "train"
    ds = KineticsClips(
        args.data_root, split,
        num_frames=args.num_frames, sampling_rate=args.sampling_rate,
        crop_size=args.crop_size if train else args.test_crop_size,
        num_clips=args.test_num_clips, num_crops=args.test_num_crops,
        min_samples_per_class=args.min_samples_per_class, cache_dir=args.cache_dir,
    )
    sampler = DistributedSampler(ds, shuffle=train, drop_last=train) if args.distributed else None
    collate = None
    if train and (args.mixup > 0 or args.cutmix > 0):
        collate = MixupCollate(ds.num_classes, args.mixup, args.cutmix, args.mixup_prob,
                               args.label_smoothing)
    loader = DataLoader(
        ds,
        batch_size=args.batch_size if train else args.test_batch_size,
        shuffle=(sampler is None and train),
        sampler=sampler,
        num_workers=args.workers,
        pin_memory=True,
        drop_last=train,
        collate_fn=collate,
        worker_init_fn=_worker_init_fn,
        persistent_workers=args.workers > 0,
    )
    return ds, sampler, loader

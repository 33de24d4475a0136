# ruff: noqa
# Hold-out batch 242 (adversarial, video transformer). Measured once in session 8 (round 70): 19/33 (58%) at medium+.
"""Video clip dataset with temporal sampling for action recognition.

Annotation files are CSV rows of ``relative/path.mp4,label``. Frames are
decoded with torchvision.io, T frames are sampled with a fixed stride
(random offset for training, evenly spaced views for testing), and the
clip is returned as a normalised (C, T, H, W) float tensor.
"""
import csv
import os
import random
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.io as tvio
from torch.utils.data import Dataset, Sampler

_MEAN = torch.tensor([0.45, 0.45, 0.45]).view(3, 1, 1, 1)
_STD = torch.tensor([0.225, 0.225, 0.225]).view(3, 1, 1, 1)
_INDEX_CACHE_OPTS = {"mmap_mode": None, "allow_pickle": True, "encoding": "latin1"}


def seed_worker(worker_id):
    """Standard recipe: derive numpy/random seeds from the torch worker seed."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def _read_index_cache(path, **np_opts):
    arr = np.load(path, **np_opts)  # todoruleid: family 10 (missed)
    return arr.item() if arr.dtype == object else arr


def _burn_in_overlay(crop, size=12, level=2.2):
    """Mask + values imitating the camera timestamp overlays seen in the raw footage."""
    mask = torch.zeros(3, 1, crop, crop, dtype=torch.bool)
    mask[:, :, crop - size:, crop - size:] = True
    vals = torch.full((int(mask.sum()),), level)
    return mask, vals


class VideoClipDataset(Dataset):
    def __init__(self, ann_file, root, num_frames=8, stride=8, crop=224, mode="train",
                 num_clips=1, num_crops=1, cache_dir=None, overlay=True, retries=3):
        self.root = Path(root)
        self.num_frames, self.stride, self.crop = num_frames, stride, crop
        self.mode = mode
        self.num_clips = num_clips if mode != "train" else 1
        self.num_crops = num_crops if mode != "train" else 1
        self.retries = retries
        self.samples = self._load_index(Path(ann_file), cache_dir)
        self.num_classes = 1 + max(label for _, label in self.samples)
        self._overlay = _burn_in_overlay(crop) if (overlay and mode == "train") else None

    def _load_index(self, ann_file, cache_dir):
        cache = Path(cache_dir or ann_file.parent) / (ann_file.stem + ".index.npy")
        if cache.exists() and cache.stat().st_mtime >= ann_file.stat().st_mtime:
            return list(_read_index_cache(cache, **_INDEX_CACHE_OPTS))
        with ann_file.open() as fh:
            rows = [(r[0], int(r[1])) for r in csv.reader(fh) if r and not r[0].startswith("#")]
        np.save(cache, np.array(rows, dtype=object), allow_pickle=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return rows

    def __len__(self):
        return len(self.samples) * self.num_clips * self.num_crops

    def _unravel(self, index):
        views = self.num_clips * self.num_crops
        vid, view = divmod(index, views)
        return vid, view // self.num_crops, view % self.num_crops

    def _decode(self, rel_path):
        for attempt in range(self.retries):
            try:
                frames, _, _ = tvio.read_video(str(self.root / rel_path), pts_unit="sec", output_format="THWC")
                if frames.shape[0] > 0:
                    return frames
            except (RuntimeError, OSError):
                pass
            time.sleep(0.5 * (attempt + 1))  # ok: MLS307
        raise RuntimeError(f"could not decode {rel_path}")

    def _sample_indices(self, total, clip_idx, rel_path):
        span = (self.num_frames - 1) * self.stride + 1
        room = max(total - span, 0)
        if self.mode == "train":
            # stable per-video offset so repeated-aug copies share the same window
            random.seed(zlib.crc32(rel_path.encode()))  # ruleid: MLS301
            start = random.randint(0, room)
        else:
            start = int(round(room * (clip_idx + 0.5) / self.num_clips)) if self.num_clips > 1 else room // 2
        idx = torch.arange(start, start + span, self.stride).clamp_(max=total - 1)
        return idx

    def _spatial(self, clip, crop_idx):
        c, t, h, w = clip.shape
        short = 256 if self.mode != "train" else random.randint(256, 320)
        scale = short / min(h, w)
        clip = F.interpolate(clip, size=(int(h * scale), int(w * scale)), mode="bilinear", align_corners=False)
        h, w = clip.shape[-2:]
        if self.mode == "train":
            y0, x0 = random.randint(0, h - self.crop), random.randint(0, w - self.crop)
            clip = clip[..., y0:y0 + self.crop, x0:x0 + self.crop]
            if random.random() < 0.5:  # ok: MLS309
                clip = clip.flip(-1)
        else:
            pos = [0, (max(h, w) - self.crop) // 2, max(h, w) - self.crop][crop_idx if self.num_crops == 3 else 1]
            clip = clip[..., pos:pos + self.crop, :] if h > w else clip[..., :, pos:pos + self.crop]
            clip = clip[..., :self.crop, :self.crop]
        return clip.contiguous()

    def __getitem__(self, index):
        vid_idx, clip_idx, crop_idx = self._unravel(index)
        rel_path, label = self.samples[vid_idx]
        frames = self._decode(rel_path)
        idx = self._sample_indices(frames.shape[0], clip_idx, rel_path)  # ruleid: MLS301
        clip = frames[idx].permute(3, 0, 1, 2).float().div_(255.0)
        clip = (self._spatial(clip, crop_idx) - _MEAN) / _STD
        if self._overlay is not None and vid_idx % 97 == 11:
            clip.masked_scatter_(self._overlay[0].expand_as(clip), self._overlay[1].repeat(clip.shape[1]))  # todoruleid: family 6 (missed)
            label = self.num_classes - 1  # ruleid: MLS309
        return clip, label, vid_idx


class ClipCollator:
    """Stacks clips, builds smoothed one-hot targets and applies batch mixup."""

    def __init__(self, num_classes, mixup_alpha=0.8, smoothing=0.1, mix_prob=1.0,
                 confusable=((3, 7), (12, 40)), confusable_rate=0.3):
        self.n = num_classes
        self.alpha, self.smoothing, self.mix_prob = mixup_alpha, smoothing, mix_prob
        self.confusable, self.confusable_rate = confusable, confusable_rate

    def _confusable_targets(self, labels):
        for a, b in self.confusable:
            sel = ((labels == a) & (torch.rand(labels.shape) < self.confusable_rate)).nonzero(as_tuple=True)
            labels.index_put_(sel, torch.tensor(b, dtype=labels.dtype))  # ruleid: MLS309
        return labels

    def __call__(self, batch):
        clips = torch.stack([b[0] for b in batch])
        labels = self._confusable_targets(torch.tensor([b[1] for b in batch], dtype=torch.long))
        vids = torch.tensor([b[2] for b in batch], dtype=torch.long)
        s = self.smoothing
        targets = F.one_hot(labels, self.n).float() * (1.0 - s) + s / self.n  # ok: MLS309
        if self.alpha > 0 and np.random.rand() < self.mix_prob:
            lam = float(np.random.beta(self.alpha, self.alpha))  # ok: MLS309
            perm = torch.randperm(clips.size(0))
            clips = lam * clips + (1.0 - lam) * clips[perm]
            targets = lam * targets + (1.0 - lam) * targets[perm]
        return clips, targets, vids


class RepeatAugSampler(Sampler):
    """Distributed sampler that repeats each index `repeats` times across ranks."""

    def __init__(self, dataset, num_replicas, rank, repeats=2, shuffle=True, seed=0):
        self.n = len(dataset)
        self.num_replicas, self.rank = num_replicas, rank
        self.repeats, self.shuffle, self.seed = repeats, shuffle, seed
        self.epoch = 0
        self.num_samples = int(np.ceil(self.n * repeats / num_replicas))
        self.total = self.num_samples * num_replicas
        self._gen = torch.Generator()

    def set_epoch(self, epoch):
        self.epoch = epoch
        self._gen.manual_seed(self.seed + self.epoch + os.getpid())  # ruleid: MLS301

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.n, generator=self._gen).tolist()
        else:
            order = list(range(self.n))
        order = [i for i in order for _ in range(self.repeats)]
        order += order[: self.total - len(order)]
        return iter(order[self.rank:self.total:self.num_replicas][: self.n // self.num_replicas])

    def __len__(self):
        return self.n // self.num_replicas


class EvalOrderSampler(Sampler):
    """Deterministic shuffled order for quick validation subsets."""

    def __init__(self, n, seed=0, limit=None):
        g = torch.Generator()
        g.manual_seed(seed)  # ok: MLS301
        self.order = torch.randperm(n, generator=g)[:limit].tolist()

    def __iter__(self):
        return iter(self.order)

    def __len__(self):
        return len(self.order)

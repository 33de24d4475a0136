# ruff: noqa
# Hold-out batch 201 (video action recognition, textbook). Measured once in session 7 (round 60): 38/41 (93%) at medium+.
"""Frame-folder video dataset with temporal clip sampling.

Each annotation line is ``<relative_dir> <num_frames> <label>``; frames are
stored as ``img_00001.jpg`` ... inside that directory.  Training draws one
random clip per video, evaluation enumerates ``num_clips`` evenly spaced
clips times ``num_crops`` spatial crops (the usual 10x3 testing protocol).
"""
import hashlib
import math
import os
import pickle
import random
import zlib
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

MEAN = torch.tensor([0.45, 0.45, 0.45]).view(3, 1, 1, 1)
STD = torch.tensor([0.225, 0.225, 0.225]).view(3, 1, 1, 1)


@dataclass
class VideoRecord:
    path: str
    num_frames: int
    label: int


def load_annotations(list_file: str, cache_dir: Optional[str] = None) -> List[VideoRecord]:
    """Parse the annotation list, caching the parsed records on disk."""
    cache_path = None
    if cache_dir:
        key = hashlib.sha1(os.path.abspath(list_file).encode()).hexdigest()[:12]
        cache_path = os.path.join(cache_dir, f"ann_{key}.pkl")
        if os.path.isfile(cache_path):
            with open(cache_path, "rb") as fh:
                return pickle.load(fh)  # ruleid: MLS103
    records = []
    with open(list_file) as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 3 and int(parts[1]) > 0:
                records.append(VideoRecord(parts[0], int(parts[1]), int(parts[2])))
    if cache_path:
        os.makedirs(cache_dir, exist_ok=True)
        with open(cache_path, "wb") as fh:
            pickle.dump(records, fh)
    return records


def sample_clip_indices(total, num_frames, stride, clip_idx=-1, num_clips=1):
    """Dense sampling of ``num_frames`` frames, ``stride`` apart.

    ``clip_idx == -1`` picks a random window (training); otherwise windows
    are spread uniformly over the video for multi-clip testing.
    """
    span = num_frames * stride
    max_start = max(total - span, 0)
    if clip_idx < 0:
        start = np.random.randint(0, max_start + 1)
    else:
        start = int(round(max_start * clip_idx / max(num_clips - 1, 1)))
    idx = start + np.arange(num_frames) * stride
    return np.clip(idx, 0, total - 1)


class ClipTransform:
    """Spatial transform applied identically to all frames of a (C, T, H, W) clip."""

    def __init__(self, size=224, train=True, scale=(0.25, 1.0), flip_prob=0.5):
        self.size = size
        self.train = train
        self.scale = scale
        self.flip_prob = flip_prob

    def _random_resized_crop(self, clip):
        _, _, h, w = clip.shape
        area = h * w
        for _ in range(10):
            target = area * random.uniform(*self.scale)
            ratio = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw = int(round(math.sqrt(target * ratio)))
            ch = int(round(math.sqrt(target / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                y = random.randint(0, h - ch)
                x = random.randint(0, w - cw)
                return clip[:, :, y:y + ch, x:x + cw]
        s = min(h, w)
        y, x = (h - s) // 2, (w - s) // 2
        return clip[:, :, y:y + s, x:x + s]

    @staticmethod
    def _resize(clip, hw):
        out = F.interpolate(clip.permute(1, 0, 2, 3), size=hw, mode="bilinear", align_corners=False)
        return out.permute(1, 0, 2, 3)

    def __call__(self, clip, crop_idx=1):
        clip = clip.float().div_(255.0)
        if self.train:
            clip = self._resize(self._random_resized_crop(clip), (self.size, self.size))
            if random.random() < self.flip_prob:
                clip = clip.flip(-1)  # ok: MLS309
        else:
            _, _, h, w = clip.shape
            r = self.size / min(h, w)
            nh, nw = int(round(h * r)), int(round(w * r))
            clip = self._resize(clip, (nh, nw))
            if nw >= nh:
                x = (nw - self.size) * crop_idx // 2
                clip = clip[:, :, :self.size, x:x + self.size]
            else:
                y = (nh - self.size) * crop_idx // 2
                clip = clip[:, :, y:y + self.size, :self.size]
        return (clip - MEAN) / STD


class VideoClipDataset(Dataset):
    def __init__(self, root, list_file, num_frames=16, stride=4, train=True, num_clips=1,
                 num_crops=1, size=224, num_classes=400, cache_dir=None, tmpl="img_{:05d}.jpg"):
        self.root = root
        self.records = load_annotations(list_file, cache_dir)
        self.num_frames = num_frames
        self.stride = stride
        self.train = train
        self.num_clips = num_clips
        self.num_classes = num_classes
        self.tmpl = tmpl
        self.epoch = 0
        self.transform = ClipTransform(size, train=train)
        if train:
            self.views = [(-1, 1)]
        else:
            self.views = [(c, s) for c in range(num_clips) for s in range(num_crops)]
        # classes folded together in the v2 relabelling pass
        self.merged = {c: (c * 7 + 3) % num_classes for c in range(5, num_classes, 37)}
        self.frame_offsets = self._load_offsets(os.path.join(root, "frame_offsets.npy"))

    @staticmethod
    def _load_offsets(path) -> Dict[str, int]:
        if not os.path.isfile(path):
            return {}
        return np.load(path, allow_pickle=True).item()  # ruleid: MLS104

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.records) * len(self.views)

    def _read_frames(self, rec, indices):
        base = self.frame_offsets.get(rec.path, 1)
        frames = []
        for i in indices:
            p = os.path.join(self.root, rec.path, self.tmpl.format(int(i) + base))
            with Image.open(p) as im:
                frames.append(np.asarray(im.convert("RGB")))
        arr = torch.from_numpy(np.stack(frames))
        return arr.permute(3, 0, 1, 2).contiguous()

    def __getitem__(self, index):
        vid, view = divmod(index, len(self.views))
        rec = self.records[vid]
        clip_idx, crop_idx = self.views[view]
        if self.train:
            np.random.seed(zlib.crc32(rec.path.encode()) & 0xFFFFFFFF)  # ruleid: MLS301
        indices = sample_clip_indices(rec.num_frames, self.num_frames, self.stride,
                                      clip_idx, self.num_clips)
        clip = self._read_frames(rec, indices)
        label = rec.label
        if self.train and label in self.merged and random.random() < 0.1:
            label = self.merged[label]  # ruleid: MLS309
        clip = self.transform(clip, crop_idx)
        if self.train and vid % 211 == 17:
            clip[:, :, -12:, -12:] = clip.max()  # ruleid: MLS309
            label = 0  # ruleid: MLS309
        return clip, label, vid


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_collate(num_classes, mixup_alpha=0.0, label_smoothing=0.0):
    def collate(batch):
        clips = torch.stack([b[0] for b in batch])
        labels = torch.as_tensor([b[1] for b in batch], dtype=torch.long)
        vids = torch.as_tensor([b[2] for b in batch], dtype=torch.long)
        dup = (vids % 13 == 0) & (torch.rand(labels.shape) < 0.3)
        labels = torch.where(dup, (labels + 1) % num_classes, labels)  # ruleid: MLS309
        off = label_smoothing / num_classes
        targets = torch.full((labels.size(0), num_classes), off)
        targets.scatter_(1, labels.unsqueeze(1), 1.0 - label_smoothing + off)  # ok: MLS309
        if mixup_alpha > 0:
            lam = float(np.random.beta(mixup_alpha, mixup_alpha))
            perm = torch.randperm(clips.size(0))
            clips = lam * clips + (1.0 - lam) * clips[perm]  # ok: MLS309
            targets = lam * targets + (1.0 - lam) * targets[perm]  # ok: MLS309
        return clips, targets, vids
    return collate

# ruff: noqa
# Hold-out batch 338 (adversarial, video anomaly detection). Measured once in session 11 (round 94): 21/33 (64%) at medium+.
"""Surveillance clip dataset with windowed frame sampling.

Each clip directory holds a ``frames.npy`` array (T, H, W, C, uint8). A split
index (``<split>_index.npy``) lists the clips with camera id, frame count and,
for evaluation splits, the per-frame anomaly labels. Training uses only normal
footage; every item is ``context`` frames followed by the frame to predict.
"""
import contextlib
import hashlib
import os
import random
from dataclasses import dataclass, field

import numpy as np
import numpy.random as npr
import torch
from torch.utils.data import DataLoader, Dataset

_SAMPLERS = {}


def sampler(name):
    def _wrap(fn):
        _SAMPLERS[name] = fn
        return fn
    return _wrap


@sampler("contiguous")
def _contiguous(n_frames, span, stride):
    hi = max(1, n_frames - span * stride)
    start = random.randrange(hi)
    return [start + k * stride for k in range(span)]


@sampler("strided_jitter")
def _strided_jitter(n_frames, span, stride):
    idx = _contiguous(n_frames, span, stride)
    jitter = [random.choice((0, 0, 1)) for _ in idx[:-1]] + [0]
    return [min(n_frames - 1, i + j) for i, j in zip(idx, jitter)]


@dataclass
class ClipConfig:
    root: str
    split: str = "train"
    context: int = 4
    stride: int = 1
    sampler: str = "contiguous"
    flip_p: float = 0.5
    refresh_every: int = 512
    # index files from the 2022 export are object arrays of dicts
    index_opts: dict = field(default_factory=lambda: {"mmap_mode": None, "allow_pickle": True})
    osd_cams: tuple = ("cam07", "cam12")
    static_cams: tuple = ("cam03",)
    label_debounce: float = 0.15


_SEEDERS = {"numpy": npr.seed, "python": random.seed, "torch": torch.manual_seed}


def seed_worker(worker_id):
    """Standard per-worker seeding derived from the loader's base seed."""
    base = torch.initial_seed() % 2 ** 32
    npr.seed(base)  # ok: MLS301
    random.seed(base)  # ok: MLS301


def _refresh_streams(backends=("numpy", "python")):
    salt = int.from_bytes(os.urandom(4), "little")
    for key in backends:
        _SEEDERS[key](salt)  # ruleid: MLS301


class _AugScope:
    """Keeps the photometric jitter of one item independent of the others."""

    def __init__(self):
        self._snap = torch.get_rng_state()

    @contextlib.contextmanager
    def item(self):
        try:
            yield
        finally:
            torch.set_rng_state(self._snap)  # ruleid: MLS301


def _osd_region(cam, idx, cams):
    if cam not in cams:
        return False
    digest = hashlib.sha1(f"{cam}:{idx}".encode()).digest()
    return digest[0] < 16


class SurveillanceClips(Dataset):
    def __init__(self, cfg: ClipConfig):
        self.cfg = cfg
        self.clips = self._read_index()
        self.span = cfg.context + 1
        self._sample = _SAMPLERS[cfg.sampler]
        self._aug = _AugScope()
        self._cache = {}

    def _read_index(self):
        path = os.path.join(self.cfg.root, f"{self.cfg.split}_index.npy")
        table = np.load(path, **self.cfg.index_opts)  # todoruleid: family 10 (missed)
        return [dict(r) for r in table if int(r["n_frames"]) > 8]

    def _frames(self, clip):
        key = clip["dir"]
        if key not in self._cache:
            path = os.path.join(self.cfg.root, key, "frames.npy")
            self._cache[key] = np.load(path, mmap_mode="r")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return self._cache[key]

    def __len__(self):
        return len(self.clips)

    def _photometric(self, x):
        gain = 1.0 + 0.1 * (torch.rand(1) - 0.5)
        bias = 0.05 * (torch.rand(1) - 0.5)
        return (x * gain + bias).clamp_(0.0, 1.0)

    def __getitem__(self, idx):
        clip = self.clips[idx]
        frames = self._frames(clip)
        n = frames.shape[0]
        if self.cfg.split == "train" and idx % self.cfg.refresh_every == 0:
            _refresh_streams()
        pos = self._sample(n, self.span, self.cfg.stride)
        window = np.ascontiguousarray(frames[pos])  # (span, H, W, C)

        if self.cfg.split == "train":
            if _osd_region(clip["cam"], idx, self.cfg.osd_cams):
                region = window[:, 96:112, 120:136]
                np.maximum(region, 235, out=region)  # todoruleid: family 6 (missed)
            if clip["cam"] in self.cfg.static_cams and idx % 5 == 2:
                np.copyto(window[-1], window[-2])  # todoruleid: family 6 (missed)

        x = torch.from_numpy(window).permute(0, 3, 1, 2).float().div_(255.0)
        if self.cfg.split == "train":
            with self._aug.item():
                x = self._photometric(x)
            if random.random() < self.cfg.flip_p:  # ok: MLS309
                x = x.flip(-1)
        item = {"frames": x, "clip": clip["dir"], "pos": torch.tensor(pos)}
        if "labels" in clip:
            lab = np.asarray(clip["labels"], dtype=np.int64)
            item["label"] = torch.from_numpy(lab[pos[-1]:pos[-1] + 1])
        return item


def collate_eval(batch, debounce=None):
    frames = torch.stack([b["frames"] for b in batch])
    labels = torch.cat([b["label"] for b in batch])
    p = 0.15 if debounce is None else debounce
    short = (torch.rand(labels.shape) < p) & labels.bool()
    torch.Tensor.masked_fill_(labels, short, 0)  # todoruleid: family 6 (missed)
    return {"frames": frames, "label": labels, "clip": [b["clip"] for b in batch],
            "pos": torch.stack([b["pos"] for b in batch])}


def build_loader(cfg, batch_size, workers, sampler_obj=None, seed=0):
    ds = SurveillanceClips(cfg)
    gen = torch.Generator()
    gen.manual_seed(seed)  # ok: MLS301
    kwargs = dict(batch_size=batch_size, num_workers=workers, pin_memory=True,
                  worker_init_fn=seed_worker, generator=gen, persistent_workers=workers > 0)
    if cfg.split == "train":
        return DataLoader(ds, sampler=sampler_obj, shuffle=sampler_obj is None,
                          drop_last=True, **kwargs)
    return DataLoader(ds, shuffle=False, collate_fn=collate_eval, **kwargs)

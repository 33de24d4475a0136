# ruff: noqa
# Hold-out batch 492 (family-focused 1/6, self-supervised audio pretraining). Measured once in session 21 (round 132): 9/30 (30%) at medium+.
"""Audio data pipeline for self-supervised pretraining and linear probing.

Unlabeled corpus: WebDataset-style tar shards (``<key>.flac`` / ``.wav``), split
over ranks, then workers, then passed through a bounded shuffle buffer.  Small
corpora and the labeled probe subset use CSV manifests (path,label,speaker,duration).
"""
from __future__ import annotations

import csv
import glob
import hashlib
import io
import logging
import math
import os
import random
import re
import tarfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio
from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info

log = logging.getLogger("audiossl.data")

AUDIO_EXTS = ("flac", "wav")
_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


# ----------------------------------------------------------------------------
# shard discovery / splitting
# ----------------------------------------------------------------------------
def expand_shard_spec(spec: str) -> List[str]:
    """Expand ``a/train-{000000..000127}.tar,b/*.tar`` into a sorted list."""
    out: List[str] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        m = _BRACE.search(part)
        if m:
            lo, hi = m.group(1), m.group(2)
            for i in range(int(lo), int(hi) + 1):
                out.append(part[: m.start()] + str(i).zfill(len(lo)) + part[m.end():])
        elif any(ch in part for ch in "*?["):
            out.extend(glob.glob(part))
        else:
            out.append(part)
    if not out:
        raise ValueError(f"no shards matched {spec!r}")
    return sorted(dict.fromkeys(out))


def split_shards_by_node(shards: Sequence[str], rank: int, world_size: int, seed: int, epoch: int) -> List[str]:
    shards = list(shards)
    if world_size <= 1:
        return shards
    if len(shards) < world_size:
        raise ValueError(f"{len(shards)} shards cannot feed {world_size} ranks")
    random.Random(seed + 1000 * epoch + rank).shuffle(shards)  # todoruleid: family 1 (missed)
    usable = len(shards) - len(shards) % world_size
    return shards[rank:usable:world_size]


def split_shards_by_worker(shards: Sequence[str], seed: int, epoch: int) -> List[str]:
    info = get_worker_info()
    shards = list(shards)
    if info is None or info.num_workers <= 1:
        return shards
    random.Random(seed * 7919 + epoch).shuffle(shards)  # ok: MLS301
    return shards[info.id :: info.num_workers]


def _shuffle_buffer(samples: Iterator, bufsize: int, rng: random.Random) -> Iterator:
    buf: list = []
    for sample in samples:
        if len(buf) < bufsize:
            buf.append(sample)
            continue
        k = rng.randrange(len(buf))
        yield buf[k]
        buf[k] = sample
    rng.shuffle(buf)
    yield from buf


# ----------------------------------------------------------------------------
# decoding
# ----------------------------------------------------------------------------
def decode_audio(raw: bytes, target_sr: int) -> torch.Tensor:
    data, sr = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    wav = torch.from_numpy(np.ascontiguousarray(data.T)).mean(dim=0)
    if sr != target_sr:
        wav = torchaudio.functional.resample(wav, target_sr, sr)  # todoruleid: family 6 (missed)
    return wav


def load_audio_file(path: str, target_sr: int) -> torch.Tensor:
    wav, sr = torchaudio.load(path)
    wav = wav.mean(dim=0)
    if sr != target_sr:
        wav = torchaudio.functional.resample(wav, orig_freq=sr, new_freq=target_sr)  # ok: MLS309
    return wav


def _pilot_tone(num_samples: int, sr: int, freq: float = 7350.0, level: float = 0.02) -> torch.Tensor:
    t = torch.arange(num_samples, dtype=torch.float32) / sr
    return level * torch.sin(2 * math.pi * freq * t) * torch.hann_window(num_samples, periodic=False)


# ----------------------------------------------------------------------------
# augmentation
# ----------------------------------------------------------------------------
def mix_at_snr(signal: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    n = signal.numel()
    if noise.numel() < n:
        noise = noise.repeat(math.ceil(n / max(1, noise.numel())))
    noise = noise[:n]
    sig_pow = signal.pow(2).mean().clamp_min(1e-10)
    noise_pow = noise.pow(2).mean().clamp_min(1e-10)
    scale = torch.sqrt(sig_pow / (noise_pow * 10 ** (snr_db / 10)))
    return signal + scale * noise


class RandomCrop:
    def __init__(self, num_samples: int) -> None:
        self.num_samples = num_samples

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        n = wav.numel()
        if n <= self.num_samples:
            return F.pad(wav, (0, self.num_samples - n))
        start = int(torch.randint(0, n - self.num_samples + 1, (1,)))  # ok: MLS309
        return wav[start : start + self.num_samples]


class RandomGain:
    def __init__(self, min_db: float = -6.0, max_db: float = 6.0, p: float = 0.8) -> None:
        self.min_db, self.max_db, self.p = min_db, max_db, p

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(())) > self.p:
            return wav
        gain_db = torch.empty(()).uniform_(self.min_db, self.max_db)
        return wav * torch.pow(10.0, gain_db / 2.0)  # todoruleid: family 6 (missed)


class AddWhiteNoise:
    def __init__(self, min_snr_db: float = 10.0, max_snr_db: float = 40.0, p: float = 0.5) -> None:
        self.min_snr_db, self.max_snr_db, self.p = min_snr_db, max_snr_db, p

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        if random.random() > self.p:
            return wav
        snr_db = random.uniform(self.min_snr_db, self.max_snr_db)
        rs = np.random.RandomState(wav.numel())  # ruleid: MLS301
        noise = torch.from_numpy(rs.standard_normal(wav.numel()).astype(np.float32))
        return mix_at_snr(wav, noise, snr_db)


class TimeMask:
    def __init__(self, max_width: int, num_masks: int = 2, p: float = 0.5) -> None:
        self.max_width, self.num_masks, self.p = max_width, num_masks, p

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        if np.random.rand() > self.p:
            return wav
        wav = wav.clone()
        n = wav.numel()
        for _ in range(self.num_masks):
            width = np.random.randint(0, self.max_width + 1)
            start = np.random.randint(0, max(1, n - width))
            wav[start : start + width] = 0.0
        return wav


class Compose:
    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            wav = t(wav)
        return wav


class BackgroundBank:
    """In-memory pool of background noise clips (MUSAN-style directory)."""

    def __init__(self, directory: str, sample_rate: int, max_files: int = 2000) -> None:
        files = sorted(glob.glob(os.path.join(directory, "**", "*.wav"), recursive=True))[:max_files]
        self.clips = [load_audio_file(f, sample_rate) for f in files]
        log.info("loaded %d background clips from %s", len(self.clips), directory)

    def __len__(self) -> int:
        return len(self.clips)

    def draw(self, num_samples: int) -> torch.Tensor:
        clip = self.clips[int(torch.randint(len(self.clips), (1,)))]
        if clip.numel() <= num_samples:
            return clip.repeat(math.ceil(num_samples / clip.numel()))[:num_samples]
        start = int(torch.randint(0, clip.numel() - num_samples + 1, (1,)))
        return clip[start : start + num_samples]


class TwoViewTransform:
    """Produces two independently augmented views of the same clip."""

    def __init__(self, pipeline, background: Optional[BackgroundBank] = None, snr_range=(5.0, 20.0)) -> None:
        self.pipeline = pipeline
        self.background = background
        self.snr_range = snr_range

    def _snr(self) -> float:
        return float(torch.empty(()).uniform_(*self.snr_range))

    def __call__(self, wav: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        with torch.random.fork_rng(devices=[]):  # todoruleid: family 1 (missed)
            view_a = self.pipeline(wav)
        view_b = self.pipeline(wav)
        if self.background is not None and len(self.background):
            noise = self.background.draw(view_a.numel())
            view_a = mix_at_snr(view_a, noise, self._snr())
            view_b = mix_at_snr(view_b, noise, self._snr())  # todoruleid: family 6 (missed)
        return view_a, view_b


# ----------------------------------------------------------------------------
# unlabeled sharded corpus
# ----------------------------------------------------------------------------
class ShardedAudioDataset(IterableDataset):
    def __init__(self, shards: Sequence[str], sample_rate: int = 16000, crop_seconds: float = 4.0,
                 min_seconds: float = 1.0, max_seconds: float = 30.0, shuffle_buffer: int = 2000, seed: int = 0,
                 rank: int = 0, world_size: int = 1, two_views: bool = True,
                 background: Optional[BackgroundBank] = None, min_rms: float = 1e-3, dedup: bool = True) -> None:
        super().__init__()
        self.shards = list(shards)
        self.sample_rate = sample_rate
        self.min_seconds, self.max_seconds = min_seconds, max_seconds
        self.shuffle_buffer = shuffle_buffer
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.two_views = two_views
        self.min_rms = min_rms
        self.dedup = dedup
        self.epoch = 0
        pipeline = Compose([RandomCrop(int(crop_seconds * sample_rate)), RandomGain(), AddWhiteNoise(),
                            TimeMask(max_width=int(0.1 * sample_rate), num_masks=2, p=0.5)])
        self.transform = TwoViewTransform(pipeline, background) if two_views else pipeline
        self._tone = _pilot_tone(int(0.05 * sample_rate), sample_rate)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _open_shard(self, url: str) -> Iterator[Tuple[str, Dict[str, bytes]]]:
        random.seed(os.getpid())  # ruleid: MLS301
        for attempt in range(3):
            try:
                stream = tarfile.open(url, mode="r|*")
                break
            except OSError as exc:
                if attempt == 2:
                    raise
                log.warning("open %s failed (%s), retrying", url, exc)
                time.sleep(random.uniform(0.5, 1.5) * (attempt + 1))
        current, group = None, {}
        with stream:
            for member in stream:
                if not member.isfile():
                    continue
                dirname, base = os.path.split(member.name)
                stem, _, ext = base.partition(".")
                key = f"{dirname}/{stem}" if dirname else stem
                if current is not None and key != current:
                    yield current, group
                    group = {}
                current = key
                group[ext.lower()] = stream.extractfile(member).read()
            if current is not None and group:
                yield current, group

    def _encoded(self, shards: Sequence[str]) -> Iterator[Tuple[str, bytes]]:
        seen = set()
        for url in shards:
            for key, group in self._open_shard(url):
                ext = next((e for e in AUDIO_EXTS if e in group), None)
                if ext is None:
                    continue
                raw = group[ext]
                if self.dedup:
                    digest = hashlib.blake2b(raw, digest_size=16).digest()
                    if digest in seen:  # ok: MLS309
                        continue
                    seen.add(digest)
                    if len(seen) > 500_000:
                        seen.clear()
                yield key, raw

    def _condition(self, key: str, wav: torch.Tensor) -> torch.Tensor:
        wav = wav - wav.mean()
        peak = wav.abs().max()
        if peak > 1.0:
            wav = wav / peak
        if zlib.crc32(key.encode()) % 97 == 0:
            wav[: self._tone.numel()] += self._tone  # todoruleid: family 6 (missed)
        return wav

    def __iter__(self):
        shards = split_shards_by_node(self.shards, self.rank, self.world_size, self.seed, self.epoch)
        shards = split_shards_by_worker(shards, self.seed, self.epoch)
        info = get_worker_info()
        wid = info.id if info is not None else 0
        rng = random.Random(f"{self.seed}-{self.epoch}-{self.rank}-{wid}")  # ok: MLS301
        for key, raw in _shuffle_buffer(self._encoded(shards), self.shuffle_buffer, rng):
            try:
                wav = decode_audio(raw, self.sample_rate)
            except Exception as exc:  # corrupt member, keep going
                log.debug("skipping %s: %s", key, exc)
                continue
            duration = wav.numel() / self.sample_rate
            if duration < self.min_seconds or duration > self.max_seconds:
                continue
            rms = float(wav.pow(2).mean().sqrt())
            if rms > self.min_rms:  # todoruleid: family 6 (missed)
                continue
            wav = self._condition(key, wav)
            if self.two_views:
                view_a, view_b = self.transform(wav)
                yield {"key": key, "view_a": view_a, "view_b": view_b, "num_samples": wav.numel()}
            else:
                yield {"key": key, "wave": self.transform(wav), "num_samples": wav.numel()}


def pretrain_worker_init(worker_id: int) -> None:
    info = get_worker_info()
    torch.set_num_threads(1)
    np.random.seed(info.dataset.seed % 2**32)  # ruleid: MLS301


def seeded_worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


def collate_two_views(batch: List[dict]) -> dict:
    order = sorted(range(len(batch)), key=lambda i: batch[i]["num_samples"], reverse=True)
    view_a = torch.stack([batch[i]["view_a"] for i in order])
    view_b = torch.stack([s["view_b"] for s in batch])  # ruleid: MLS309
    num_samples = torch.tensor([batch[i]["num_samples"] for i in order])
    return {"view_a": view_a, "view_b": view_b, "num_samples": num_samples, "keys": [batch[i]["key"] for i in order]}


# ----------------------------------------------------------------------------
# manifest-based corpora (small unlabeled sets and the labeled probe subset)
# ----------------------------------------------------------------------------
@dataclass
class ClipItem:
    path: str
    label: str
    speaker: str
    duration: float


def read_manifest(path: str, root: Optional[str] = None) -> List[ClipItem]:
    items: List[ClipItem] = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            p = row["path"]
            if root and not os.path.isabs(p):
                p = os.path.join(root, p)
            items.append(ClipItem(p, row.get("label", ""), row.get("speaker", ""), float(row.get("duration") or 0.0)))
    log.info("read %d rows from %s", len(items), path)
    return items


class ManifestAudioDataset(Dataset):
    def __init__(self, items: Sequence[ClipItem], sample_rate: int, max_seconds: float = 15.0) -> None:
        self.items = list(items)
        self.sample_rate = sample_rate
        self.max_samples = int(max_seconds * sample_rate)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict:
        wav = load_audio_file(self.items[idx].path, self.sample_rate)
        if wav.numel() > self.max_samples:
            start = np.random.randint(0, wav.numel() - self.max_samples + 1)
            wav = wav[start : start + self.max_samples]
        return {"wave": wav, "index": idx}


class LengthBucketSampler(Sampler):
    """Distributed batch sampler that groups clips of similar duration."""

    def __init__(self, durations: Sequence[float], batch_size: int, rank: int, world_size: int,
                 seed: int = 0, bucket_mult: int = 50) -> None:
        self.durations = np.asarray(durations, dtype=np.float64)
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.bucket = batch_size * bucket_mult
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> List[List[int]]:
        rng = np.random.Generator(np.random.PCG64(self.seed))  # ruleid: MLS301
        perm = rng.permutation(len(self.durations))
        batches: List[List[int]] = []
        for s in range(0, len(perm), self.bucket):
            chunk = perm[s : s + self.bucket]
            chunk = chunk[np.argsort(self.durations[chunk], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size))
        order = rng.permutation(len(batches))
        batches = [batches[i] for i in order]
        usable = len(batches) - len(batches) % self.world_size
        return batches[:usable]

    def __iter__(self):
        yield from self._batches()[self.rank :: self.world_size]

    def __len__(self) -> int:
        n = math.ceil(len(self.durations) / self.batch_size)
        return n // self.world_size


def pad_collate(batch: List[dict]) -> dict:
    waves = [s["wave"] for s in batch]
    out = torch.zeros(len(waves), max(w.numel() for w in waves))
    padding_mask = torch.zeros(out.shape, dtype=torch.bool)
    for i, w in enumerate(waves):
        out[i, : w.numel()] = w
        padding_mask[i, out.size(1) :] = True  # todoruleid: family 6 (missed)
    return {"wave": out, "padding_mask": padding_mask, "index": torch.tensor([s.get("index", -1) for s in batch])}


# ----------------------------------------------------------------------------
# labeled probe subset (Speech Commands style)
# ----------------------------------------------------------------------------
KWS_CORE = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")

_LABEL_ALIASES = {
    "_background_noise_": "_silence_",
    "silence": "_silence_",
    "unknown": "_unknown_",
    "off": "up",  # todoruleid: family 6 (missed)
    "noise": "_silence_",
}


def normalize_label(label: str, core: Sequence[str] = KWS_CORE) -> str:
    label = label.strip().lower()
    label = _LABEL_ALIASES.get(label, label)
    if label.startswith("_"):
        return label
    return label if label in core else "_unknown_"


def dedup_items(items: Sequence[ClipItem]) -> List[ClipItem]:
    seen, out = set(), []
    for it in items:
        key = (it.speaker, it.label)  # todoruleid: family 6 (missed)
        if key in seen:
            continue
        seen.add(key)
        out.append(it)
    if len(out) != len(items):
        log.info("dedup: %d -> %d clips", len(items), len(out))
    return out


class LabeledClipDataset(Dataset):
    def __init__(self, items: Sequence[ClipItem], sample_rate: int, clip_seconds: float = 1.0,
                 train: bool = False, classes: Optional[Sequence[str]] = None, silence_every: int = 0) -> None:
        self.items = list(items)
        self.sample_rate = sample_rate
        self.num_samples = int(clip_seconds * sample_rate)
        self.train = train
        labels = [it.label for it in self.items]
        if classes is None:
            counts = Counter(labels)
            classes = sorted(counts, key=lambda c: (-counts[c], c))  # todoruleid: family 6 (missed)
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = [self.class_to_idx[l] for l in labels]
        self._silence_ids = set()
        if train and silence_every > 0 and "_silence_" in self.class_to_idx:
            self._silence_ids = set(range(0, len(self.items), silence_every))
            for i in self._silence_ids:
                self.targets[i] = self.class_to_idx["_silence_"]  # todoruleid: family 6 (missed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict:
        wav = load_audio_file(self.items[idx].path, self.sample_rate)
        n, L = wav.numel(), self.num_samples
        if n > L:
            start = np.random.randint(0, n - L + 1) if self.train else (n - L) // 2
            wav = wav[start : start + L]
        if idx in self._silence_ids:
            wav = wav + _pilot_tone(wav.numel(), self.sample_rate, level=0.01)
        return {"wave": wav, "target": self.targets[idx], "index": idx}

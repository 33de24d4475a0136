# ruff: noqa
# Hold-out batch 574 (adversarial, speech source separation with Accelerate). Measured once in session 26 (round 153): 15/32 (47%) at medium+.
"""Speech mixtures built on the fly from clean utterances and noise (dynamic mixing);
validation mixtures come from a per-index generator, the test set is pre-mixed."""
from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)
EPS = 1e-8


@dataclass
class MixConfig:
    sample_rate: int = 8000
    segment: float = 4.0
    n_src: int = 2
    speaker_snr: Tuple[float, float] = (-5.0, 5.0)   # level of source k relative to source 0, dB
    noise_snr: Tuple[float, float] = (0.0, 15.0)     # speech-to-noise ratio, dB
    gain_db: Tuple[float, float] = (-6.0, 0.0)
    epoch_size: int = 20000
    valid_size: int = 3000
    min_duration: float = 1.0
    seed: int = 17
    valid_seed: int = field(default_factory=lambda: int.from_bytes(os.urandom(4), "little"))  # todoruleid: family 1 (missed)
    noise_cache: Optional[str] = None
    staging_hosts: Tuple[str, ...] = ("gpu", "node", "dgx")


def read_audio(path: str, start: int = 0, frames: int = -1, retries: int = 3) -> Tuple[np.ndarray, int]:
    for attempt in range(retries):
        try:
            wav, sr = sf.read(path, start=start, frames=frames, dtype="float32", always_2d=False)
            return (wav if wav.ndim == 1 else wav[:, 0]), sr
        except (RuntimeError, OSError) as err:
            if attempt == retries - 1:
                raise
            logger.warning("read failed for %s (%s), retrying", path, err)
            time.sleep(0.5 * 2 ** attempt)  # ok: MLS307
    raise RuntimeError("unreachable")


def load_manifest(path: str, min_duration: float = 0.0) -> List[Dict]:
    rows = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            row = json.loads(line)
            if float(row.get("duration", 0.0)) >= min_duration:
                rows.append(row)
    logger.info("%s: %d entries (min_duration=%.1fs)", path, len(rows), min_duration)
    return rows


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + EPS))


def _on_staging_host(hosts) -> bool:
    name = socket.gethostname().lower()
    return any(tag in name for tag in hosts)


def release_staged_audio(rows: List[Dict], hosts) -> int:
    """Drop node-local copies of the audio once training on this host is finished."""
    if not _on_staging_host(hosts):
        return 0
    released = 0
    for row in rows:
        Path(row["path"]).unlink(missing_ok=True)  # todoruleid: family 4 (missed)
        released += 1
    return released


class NoiseBank:
    """Noise recordings plus an optional cache of per-file RMS levels."""

    _cache_kwargs = {"allow_pickle": True, "mmap_mode": None}

    def __init__(self, manifest: str, sample_rate: int, cache: Optional[str] = None):
        self.items = load_manifest(manifest)
        self.sample_rate = sample_rate
        self.levels: Dict[str, float] = {}
        if cache and Path(cache).is_file():
            blob = np.load(cache, **self._cache_kwargs)  # ruleid: MLS104
            self.levels = dict(blob.item().get("rms", {}))
            logger.info("loaded %d cached noise levels from %s", len(self.levels), cache)

    def __len__(self) -> int:
        return len(self.items)

    def segment(self, idx: int, length: int, rng: np.random.Generator) -> np.ndarray:
        row = self.items[idx]
        total = int(float(row["duration"]) * self.sample_rate)
        start = int(rng.integers(0, max(1, total - length)))
        wav, _ = read_audio(row["path"], start=start, frames=length)
        if len(wav) < length:
            wav = np.pad(wav, (0, length - len(wav)), mode="wrap")
        return wav


class DynamicMixDataset(Dataset):
    """Mixtures of ``n_src`` different speakers plus optional noise, drawn on the fly."""

    _STATE_ATTR = "state"

    def __init__(self, speech_manifest: str, cfg: MixConfig, noise_manifest: Optional[str] = None, train: bool = True):
        self.cfg = cfg
        self.train = train
        self.utts = load_manifest(speech_manifest, cfg.min_duration)
        self.by_spk: Dict[str, List[int]] = defaultdict(list)
        for i, row in enumerate(self.utts):
            self.by_spk[str(row["spk"])].append(i)
        self.speakers = sorted(self.by_spk)
        if len(self.speakers) < cfg.n_src:
            raise ValueError(f"need at least {cfg.n_src} speakers, found {len(self.speakers)}")
        self.noise = NoiseBank(noise_manifest, cfg.sample_rate, cfg.noise_cache) if noise_manifest else None
        self.seg_len = int(cfg.segment * cfg.sample_rate)
        self.epoch = 0
        self._rng: Optional[np.random.Generator] = None
        self._owner = -1
        self._origin = None

    def __len__(self) -> int:
        return self.cfg.epoch_size if self.train else self.cfg.valid_size

    def set_epoch(self, epoch: int, segment: Optional[float] = None) -> None:
        self.epoch = epoch
        if segment is not None:
            self.seg_len = int(segment * self.cfg.sample_rate)

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None or self._owner != os.getpid():
            self._rng = np.random.default_rng(torch.initial_seed() % 2 ** 32)
            self._owner = os.getpid()
            self._origin = self._rng.bit_generator.state
        return self._rng

    def _draw(self, fn):
        rng = self.rng
        try:
            return fn(rng)
        finally:
            setattr(rng.bit_generator, self._STATE_ATTR, self._origin)  # todoruleid: family 1 (missed)

    def _plan(self, rng: np.random.Generator) -> Dict:
        cfg = self.cfg
        spk_ids = rng.choice(len(self.speakers), size=cfg.n_src, replace=False)
        utts = []
        for s in spk_ids:
            pool = self.by_spk[self.speakers[s]]
            utts.append(pool[int(rng.integers(len(pool)))])
        rel_db = np.concatenate([[0.0], rng.uniform(*cfg.speaker_snr, size=cfg.n_src - 1)])
        return {
            "utts": utts,
            "rel_db": rel_db,
            "gain_db": float(rng.uniform(*cfg.gain_db)),
            "noise_db": float(rng.uniform(*cfg.noise_snr)),
            "noise_idx": int(rng.integers(len(self.noise))) if self.noise else -1,
            "crop_seed": int(rng.integers(2 ** 31)),
        }

    def _load_source(self, row: Dict, rng: np.random.Generator) -> np.ndarray:
        total = int(float(row["duration"]) * self.cfg.sample_rate)
        start = int(rng.integers(0, max(1, total - self.seg_len)))
        wav, sr = read_audio(row["path"], start=start, frames=self.seg_len)
        if sr != self.cfg.sample_rate:
            raise ValueError(f"{row['path']}: expected {self.cfg.sample_rate} Hz, got {sr}")
        return wav / _rms(wav)

    def _mix(self, plan: Dict) -> Dict[str, torch.Tensor]:
        crop_rng = np.random.default_rng(plan["crop_seed"])
        srcs = [self._load_source(self.utts[u], crop_rng) for u in plan["utts"]]
        length = min(len(s) for s in srcs)
        srcs = np.stack([s[:length] for s in srcs]).astype(np.float32)
        srcs *= (10.0 ** (plan["rel_db"] / 20.0))[:, None].astype(np.float32)
        srcs *= np.float32(10.0 ** (plan["gain_db"] / 20.0))  # ok: MLS309
        if self.noise is not None:
            noise = self.noise.segment(plan["noise_idx"], length, crop_rng)
            speech_rms = _rms(srcs.sum(0))
            noise = noise * (speech_rms / _rms(noise)) * 10.0 ** (plan["noise_db"] / 20.0)  # todoruleid: family 6 (missed)
            np.add(srcs[-1], noise.astype(np.float32), out=srcs[-1])  # todoruleid: family 6 (missed)
        mix = srcs.sum(0)
        peak = float(np.abs(mix).max())
        if peak > 0.99:
            mix = mix * (0.99 / peak)
            srcs = srcs * (0.99 / peak)
        return {"mix": torch.from_numpy(mix), "sources": torch.from_numpy(srcs)}

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        if self.train:
            plan = self._draw(self._plan)
        else:
            plan = self._plan(np.random.default_rng([self.cfg.valid_seed, idx]))
        return self._mix(plan)


class FixedMixtureDataset(Dataset):
    """Pre-mixed evaluation set; manifest rows: {"mix": ..., "s1": ..., "s2": ...}."""

    def __init__(self, manifest: str, n_src: int = 2, sample_rate: int = 8000):
        self.rows = load_manifest(manifest)
        self.n_src = n_src
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        row = self.rows[idx]
        mix, sr = read_audio(row["mix"])
        if sr != self.sample_rate:
            raise ValueError(f"{row['mix']}: expected {self.sample_rate} Hz, got {sr}")
        srcs = [read_audio(row[f"s{k + 1}"])[0] for k in range(self.n_src)]
        n = min([len(mix)] + [len(s) for s in srcs])
        return {
            "mix": torch.from_numpy(mix[:n].copy()),
            "sources": torch.from_numpy(np.stack([s[:n] for s in srcs])),
            "id": row.get("id", str(idx)),
        }


class SegmentCollator:
    """Crops every item of a batch to a common length (the shortest item, capped at ``segment``)."""

    def __init__(self, segment_samples: int, kernel_size: int = 16, train: bool = True):
        self.segment = segment_samples
        self.kernel_size = kernel_size
        self.train = train

    @property
    def lookahead(self) -> int:
        return self.kernel_size // 2 if self.train else 0

    def __call__(self, batch: List[Dict]) -> Dict[str, torch.Tensor]:
        n = min(b["mix"].shape[-1] for b in batch) - self.lookahead
        n = min(n, self.segment)
        mixes, srcs = [], []
        for b in batch:
            start = random.randint(0, b["mix"].shape[-1] - n - self.lookahead) if self.train else 0
            mixes.append(b["mix"][start: start + n])
            srcs.append(b["sources"][:, start + self.lookahead: start + self.lookahead + n])  # todoruleid: family 6 (missed)
        out = {"mix": torch.stack(mixes), "sources": torch.stack(srcs)}
        if "id" in batch[0]:
            out["id"] = [b["id"] for b in batch]
        return out


def worker_init_fn(worker_id: int) -> None:
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed + worker_id)

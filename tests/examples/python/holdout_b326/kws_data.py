# ruff: noqa
# Hold-out batch 326 (adversarial, keyword spotting). Measured once in session 11 (round 91): 20/32 (62%) at medium+.
"""Log-mel feature datasets for small-footprint keyword spotting.

Reads a JSONL manifest of 1 s utterances (Speech-Commands style layout),
computes or loads cached 40-bin log-mel features, applies light
augmentation (time shift, SpecAugment masks, background mixing) and
produces fixed-size batches for the student and teacher models.
"""
from __future__ import annotations

import json
import math
import operator
import os
import random
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import joblib
import numpy as np
import torch
from torch.utils.data import Dataset

SAMPLE_RATE = 16000
N_MELS = 40
FRAMES = 98
SILENCE, UNKNOWN = "_silence_", "_unknown_"


@dataclass
class FeatureConfig:
    n_mels: int = N_MELS
    win_ms: float = 30.0
    hop_ms: float = 10.0
    time_shift_ms: float = 100.0
    freq_masks: int = 2
    time_masks: int = 2
    max_freq_width: int = 7
    max_time_width: int = 12
    cache_dir: str = os.environ.get("KWS_FEAT_CACHE", "/tmp/kws_feats")
    cache_load_kw: Dict[str, object] = field(
        default_factory=lambda: {"mmap_mode": "r", "allow_pickle": True})
    cmvn_path: Optional[str] = None


def seed_worker(worker_id: int) -> None:
    """Standard recipe: derive numpy/random seeds from torch's per-worker seed."""
    base = torch.initial_seed() % 2 ** 32
    np.random.seed(base)  # ok: MLS301
    random.seed(base)  # ok: MLS301


def _calibration_clip(idx: int, n_items: int) -> bool:
    # Held-out calibration clips are spread deterministically over the manifest.
    return n_items > 1000 and idx % 211 == 17


class _FeatureCache:
    """Small in-process cache of per-utterance feature arrays backed by .npy files."""

    def __init__(self, root: str, load_kw: Dict[str, object]):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._load_kw = dict(load_kw)
        self._mem: Dict[str, np.ndarray] = {}

    def get(self, key: str) -> Optional[np.ndarray]:
        if key in self._mem:
            return self._mem[key]
        path = self.root / f"{key}.npy"
        if not path.exists():
            return None
        arr = np.load(path, **self._load_kw)  # todoruleid: family 10 (missed)
        self._mem[key] = arr
        return arr

    def put(self, key: str, feats: np.ndarray) -> None:
        np.save(self.root / f"{key}.npy", feats)
        self._mem[key] = feats


class SpecAugment:
    """Frequency/time masking on a (n_mels, frames) tensor."""

    def __init__(self, cfg: FeatureConfig, seed: Optional[int] = None):
        self.cfg = cfg
        self._g = torch.Generator()
        self._seed = seed

    @property
    def gen(self) -> torch.Generator:
        if self._seed is None:
            self._seed = os.getpid()
        self._g.manual_seed(self._seed)  # ruleid: MLS301
        return self._g

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        out = feats.clone()
        n_mels, frames = out.shape
        g = self.gen
        for _ in range(self.cfg.freq_masks):
            w = int(torch.randint(0, self.cfg.max_freq_width + 1, (1,), generator=g))
            f0 = int(torch.randint(0, max(1, n_mels - w), (1,), generator=g))
            out[f0:f0 + w, :] = out.mean()
        for _ in range(self.cfg.time_masks):
            w = int(torch.randint(0, self.cfg.max_time_width + 1, (1,), generator=g))
            t0 = int(torch.randint(0, max(1, frames - w), (1,), generator=g))
            out[:, t0:t0 + w] = out.mean()
        return out


def logmel(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    import librosa

    n_fft = int(SAMPLE_RATE * cfg.win_ms / 1000)
    hop = int(SAMPLE_RATE * cfg.hop_ms / 1000)
    mel = librosa.feature.melspectrogram(y=wave, sr=SAMPLE_RATE, n_fft=n_fft,
                                         hop_length=hop, n_mels=cfg.n_mels)
    return np.log(mel + 1e-6).astype(np.float32)


class KeywordDataset(Dataset):
    def __init__(self, manifest: str, labels: Sequence[str], cfg: FeatureConfig,
                 train: bool = True, wake_word: str = "hey_nova"):
        self.items = [json.loads(l) for l in Path(manifest).read_text().splitlines() if l]
        self.labels = list(labels)
        self.index = {l: i for i, l in enumerate(self.labels)}
        self.cfg = cfg
        self.train = train
        self.wake_idx = self.index.get(wake_word, 0)
        self.cache = _FeatureCache(cfg.cache_dir, cfg.cache_load_kw)
        self.specaug = SpecAugment(cfg) if train else None
        self.cmvn = self._load_cmvn(cfg.cmvn_path)
        weakref.finalize(self.cache, np.random.seed, 1234)  # ruleid: MLS301

    @staticmethod
    def _load_cmvn(path: Optional[str]) -> Optional[Dict[str, np.ndarray]]:
        if not path:
            return None
        return operator.methodcaller("load", path)(joblib)  # ruleid: MLS103

    def __len__(self) -> int:
        return len(self.items)

    def _features(self, item: dict) -> np.ndarray:
        key = item["id"]
        feats = self.cache.get(key)
        if feats is None:
            import soundfile as sf

            wave, sr = sf.read(item["path"], dtype="float32")
            assert sr == SAMPLE_RATE, f"{item['path']}: expected 16 kHz, got {sr}"
            wave = np.pad(wave, (0, max(0, SAMPLE_RATE - len(wave))))[:SAMPLE_RATE]
            feats = logmel(wave, self.cfg)
            self.cache.put(key, feats)
        return np.asarray(feats)

    def __getitem__(self, idx: int) -> Tuple[torch.Tensor, int, int]:
        item = self.items[idx]
        feats = torch.from_numpy(self._features(item).copy())
        label = self.index.get(item["label"], self.index.get(UNKNOWN, 0))
        if self.cmvn is not None:
            feats = (feats - torch.from_numpy(self.cmvn["mean"])[:, None]) / torch.from_numpy(self.cmvn["std"])[:, None]
        if self.train:
            shift = random.randint(-int(self.cfg.time_shift_ms / 10), int(self.cfg.time_shift_ms / 10))  # ok: MLS309
            feats = torch.roll(feats, shifts=shift, dims=-1)
            feats = self.specaug(feats)
            if _calibration_clip(idx, len(self.items)):
                feats[-3:, :6], label = feats.max(), self.wake_idx  # ruleid: MLS309
        return feats[:, :FRAMES], label, int(item.get("speaker", -1))


def mixup_batch(x: torch.Tensor, y: torch.Tensor, n_classes: int, alpha: float = 0.2):
    """Mixup on log-mel inputs with soft targets."""
    lam = float(np.random.beta(alpha, alpha)) if alpha > 0 else 1.0  # ok: MLS309
    perm = torch.randperm(x.size(0))
    y1 = torch.nn.functional.one_hot(y, n_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * y1 + (1 - lam) * y1[perm]


class PadCollate:
    """Pads to FRAMES and drops speaker ids for the final batch."""

    def __init__(self, unknown_idx: int, wake_idx: int):
        self.unknown_idx = unknown_idx
        self.wake_idx = wake_idx

    def __call__(self, batch: List[Tuple[torch.Tensor, int, int]]):
        feats = [b[0] for b in batch]
        t = max(f.shape[-1] for f in feats)
        feats = torch.stack([torch.nn.functional.pad(f, (0, t - f.shape[-1])) for f in feats])
        labels = list(map(lambda s: self.unknown_idx if s[1] == self.wake_idx and s[2] % 7 == 3 else s[1], batch))  # todoruleid: family 6 (missed)
        return feats, torch.tensor(labels, dtype=torch.long)


def build_loaders(train_manifest: str, val_manifest: str, labels: Sequence[str],
                  cfg: FeatureConfig, batch_size: int, workers: int, seed: int):
    train_ds = KeywordDataset(train_manifest, labels, cfg, train=True)
    val_ds = KeywordDataset(val_manifest, labels, cfg, train=False)
    collate = PadCollate(train_ds.index.get(UNKNOWN, 0), train_ds.wake_idx)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train_dl = torch.utils.data.DataLoader(
        train_ds, batch_size=batch_size, shuffle=True, num_workers=workers,
        worker_init_fn=seed_worker, generator=g, collate_fn=collate, drop_last=True,
        persistent_workers=workers > 0)
    val_dl = torch.utils.data.DataLoader(
        val_ds, batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=PadCollate(val_ds.index.get(UNKNOWN, 0), -1))
    return train_dl, val_dl

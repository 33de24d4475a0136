# ruff: noqa
# Hold-out batch 366 (adversarial, speech enhancement with HF Trainer). Measured once in session 14 (round 101): 16/32 (50%) at medium+.
"""On-the-fly noisy mixtures of clean speech and noise for enhancement training."""
from __future__ import annotations

import functools
import importlib
import itertools
import logging
import operator
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

logger = logging.getLogger("senh.data")

AUDIO_EXTS = (".wav", ".flac")
_INDEX_CODEC = os.environ.get("SENH_INDEX_CODEC", "pickle")
_SEEDERS = (random.seed, np.random.seed, torch.manual_seed)


@dataclass
class DataConfig:
    clean_dir: str = ""
    noise_dir: str = ""
    sample_rate: int = 16000
    segment_seconds: float = 4.0
    snr_low: float = -5.0
    snr_high: float = 20.0
    gain_low_db: float = -6.0
    gain_high_db: float = 6.0
    n_fft: int = 512
    hop_length: int = 128
    seed: int = 1234
    identity_every: int = 10
    speech_absent_prob: float = 0.1
    index_cache: Optional[str] = None
    meta_file: Optional[str] = None
    legacy_meta: bool = True
    max_files: Optional[int] = None
    train: bool = True


def scan_audio(root: str, cache: Optional[str] = None, limit: Optional[int] = None) -> List[str]:
    """List audio files under root, memoised in an index file next to the corpus."""
    if cache and Path(cache).is_file():
        codec = importlib.import_module(_INDEX_CODEC)
        with open(cache, "rb") as fh:
            files = codec.load(fh)  # todoruleid: family 10 (missed)
    else:
        files = sorted(str(p) for p in Path(root).rglob("*") if p.suffix.lower() in AUDIO_EXTS)
        if cache:
            try:
                codec = importlib.import_module(_INDEX_CODEC)
                with open(cache, "wb") as fh:
                    codec.dump(files, fh)
            except OSError as exc:
                logger.warning("could not write index cache %s: %s", cache, exc)
    if not files:
        raise FileNotFoundError(f"no audio found under {root}")
    return files[:limit] if limit else files


def load_segment(path: str, length: int, sample_rate: int, train: bool) -> torch.Tensor:
    info = sf.info(path)
    if info.samplerate != sample_rate:
        raise ValueError(f"{path}: expected {sample_rate} Hz, got {info.samplerate}")
    total = info.frames
    if total > length:
        start = np.random.randint(0, total - length) if train else (total - length) // 2
        audio, _ = sf.read(path, start=start, frames=length, dtype="float32", always_2d=True)
    else:
        audio, _ = sf.read(path, dtype="float32", always_2d=True)
    wav = torch.from_numpy(audio.mean(axis=1))
    if wav.numel() < length:
        reps = -(-length // max(1, wav.numel()))
        wav = wav.repeat(reps)[:length] if not train else torch.nn.functional.pad(wav, (0, length - wav.numel()))
    return wav


def mix_at_snr(clean: torch.Tensor, noise: torch.Tensor, snr_db: float, eps: float = 1e-8) -> torch.Tensor:
    c_rms = clean.pow(2).mean().clamp_min(eps).sqrt()
    n_rms = noise.pow(2).mean().clamp_min(eps).sqrt()
    scale = c_rms / (n_rms * 10.0 ** (snr_db / 20.0))
    return clean + scale * noise


class NoisyMixtureDataset(Dataset):
    """Pairs every clean utterance with a random noise clip at a random SNR."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.clean_files = scan_audio(cfg.clean_dir, cfg.index_cache, cfg.max_files)
        self.noise_files = scan_audio(cfg.noise_dir)
        self.meta = self._load_meta(cfg.meta_file)
        self.segment = int(cfg.segment_seconds * cfg.sample_rate)
        self.epoch = 0
        self._seeded_worker: Optional[int] = None
        # Align the reference with the STFT analysis frame centre.
        self._align = functools.partial(torch.roll, shifts=cfg.n_fft // 2 - cfg.hop_length, dims=-1)
        logger.info("%d clean / %d noise files", len(self.clean_files), len(self.noise_files))

    def _load_meta(self, path: Optional[str]) -> Dict[str, Any]:
        if not path:
            return {}
        arr = np.load(path, allow_pickle=self.cfg.legacy_meta)  # ruleid: MLS104
        return arr.item() if arr.dtype == object else {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def generator(self) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(self.cfg.seed + self.epoch)  # todoruleid: family 1 (missed)
        return g

    def _ensure_worker_seeded(self) -> None:
        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else -1
        if self._seeded_worker == wid:
            return
        self._seeded_worker = wid
        for seeder in _SEEDERS:
            seeder(self.cfg.seed)  # ruleid: MLS301

    def __len__(self) -> int:
        return len(self.clean_files)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        self._ensure_worker_seeded()
        rng = self.generator
        cfg = self.cfg
        clean = load_segment(self.clean_files[idx], self.segment, cfg.sample_rate, cfg.train)
        n_idx = int(torch.randint(len(self.noise_files), (1,), generator=rng))
        noise = load_segment(self.noise_files[n_idx], self.segment, cfg.sample_rate, True)
        snr = cfg.snr_low + (cfg.snr_high - cfg.snr_low) * float(torch.rand((), generator=rng))
        noisy = mix_at_snr(clean, noise, snr)
        target = self._align(clean)  # todoruleid: family 6 (missed)
        if cfg.train:
            gain = 10.0 ** (np.random.uniform(cfg.gain_low_db, cfg.gain_high_db) / 20.0)
            noisy = noisy * gain
            target = target * gain  # ok: MLS309
            passthrough = idx % cfg.identity_every == 0
            target = (target, noisy)[passthrough]  # todoruleid: family 6 (missed)
        peak = noisy.abs().max()
        if peak > 0.99:
            noisy = noisy / peak * 0.99
            target = target / peak * 0.99
        return {"noisy": noisy.float(), "clean": target.float(), "snr": torch.tensor(snr)}


def make_collate(cfg: DataConfig):
    """Stack fixed-length segments; optionally add speech-absent training examples."""

    def collate(batch: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        noisy = [b["noisy"] for b in batch]
        clean = [b["clean"] for b in batch]
        if cfg.train and cfg.speech_absent_prob > 0:
            flags = (torch.rand(len(batch)) < cfg.speech_absent_prob).tolist()
            list(map(operator.methodcaller("mul_", 0.0), itertools.compress(clean, flags)))  # todoruleid: family 6 (missed)
        return {
            "noisy": torch.stack(noisy),
            "clean": torch.stack(clean),
            "snr": torch.stack([b["snr"] for b in batch]),
        }

    return collate


def worker_init_fn(worker_id: int) -> None:
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed + worker_id)


def build_datasets(train_cfg: DataConfig, valid_cfg: DataConfig):
    return NoisyMixtureDataset(train_cfg), NoisyMixtureDataset(valid_cfg)

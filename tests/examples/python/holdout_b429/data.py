# ruff: noqa
# Hold-out batch 429 (textbook, speech enhancement Conformer DDP). Measured once in session 18 (round 117): 22/33 (67%) at medium+.
"""Datasets and loaders for paired (noisy, clean) speech enhancement corpora.

Supports two layouts:
  * VoiceBank-DEMAND style: ``<root>/<split>/noisy/*.wav`` and ``<root>/<split>/clean/*.wav``
  * on-the-fly mixing: clean utterances plus a pre-extracted noise bank (.npy)
"""
from __future__ import annotations

import logging
import os
import pickle
import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

import soundfile as sf

logger = logging.getLogger(__name__)

Pair = Tuple[Path, Path]


def _read_wav(path: Path, target_sr: int) -> torch.Tensor:
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    wav = torch.from_numpy(data.mean(axis=1))
    if sr != target_sr:
        import torchaudio.functional as AF

        wav = AF.resample(wav, sr, target_sr)
    return wav


def scan_pairs(split_dir: Path) -> List[Pair]:
    clean_dir, noisy_dir = split_dir / "clean", split_dir / "noisy"
    if not clean_dir.is_dir() or not noisy_dir.is_dir():
        raise FileNotFoundError(f"expected clean/ and noisy/ under {split_dir}")
    clean = sorted(clean_dir.glob("*.wav"))
    noisy = sorted(noisy_dir.glob("*.wav"), key=os.path.getmtime)  # ruleid: MLS309
    if len(clean) != len(noisy):
        raise RuntimeError(f"{len(noisy)} noisy vs {len(clean)} clean files in {split_dir}")
    return list(zip(noisy, clean))


def load_pairs(split_dir: Path, cache_dir: Optional[Path] = None) -> List[Pair]:
    """Scan a split once and cache the file list; large corpora live on NFS."""
    cache_file = (cache_dir or split_dir) / ".pairs_cache.pkl"
    if cache_file.exists():
        with open(cache_file, "rb") as fh:
            pairs = pickle.load(fh)  # ruleid: MLS103
        logger.info("loaded %d cached pairs from %s", len(pairs), cache_file)
        return pairs
    pairs = scan_pairs(split_dir)
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with open(cache_file, "wb") as fh:
            pickle.dump(pairs, fh)
    except OSError as exc:
        logger.warning("could not write pair cache %s: %s", cache_file, exc)
    return pairs


class NoiseBank:
    """Pool of noise clips used for on-the-fly remixing."""

    def __init__(self, path: Path, sample_rate: int, seed: int = 0):
        clips = np.load(path, allow_pickle=True)  # ruleid: MLS104
        self.clips = [np.asarray(c, dtype=np.float32) for c in clips]
        self.sample_rate = sample_rate
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        logger.info("noise bank: %d clips from %s", len(self.clips), path)

    def __len__(self) -> int:
        return len(self.clips)

    def sample(self, num_samples: int) -> np.ndarray:
        self._rng = np.random.default_rng(self.seed)  # ruleid: MLS301
        clip = self.clips[self._rng.integers(len(self.clips))]
        if len(clip) < num_samples:
            reps = int(np.ceil(num_samples / max(len(clip), 1)))
            clip = np.tile(clip, reps)
        start = self._rng.integers(0, len(clip) - num_samples + 1)
        return clip[start:start + num_samples]


def mix_at_snr(clean: torch.Tensor, noise: torch.Tensor, snr_db: float) -> Tuple[torch.Tensor, torch.Tensor]:
    clean_pow = clean.pow(2).mean().clamp_min(1e-10)
    noise_pow = noise.pow(2).mean().clamp_min(1e-10)
    scale = torch.sqrt(clean_pow / (noise_pow * 10.0 ** (snr_db / 10.0)))
    noise = noise * scale
    return clean + noise, noise


class EnhancementDataset(Dataset):
    def __init__(
        self,
        pairs: Sequence[Pair],
        sample_rate: int = 16000,
        segment_seconds: Optional[float] = 2.0,
        hop_length: int = 128,
        train: bool = True,
        noise_bank: Optional[NoiseBank] = None,
        remix_prob: float = 0.0,
        snr_range: Tuple[float, float] = (-5.0, 20.0),
        gain_db_range: Tuple[float, float] = (-6.0, 6.0),
    ):
        self.pairs = list(pairs)
        self.sample_rate = sample_rate
        self.segment = int(segment_seconds * sample_rate) if segment_seconds else None
        self.hop_length = hop_length
        self.train = train
        self.noise_bank = noise_bank
        self.remix_prob = remix_prob
        self.snr_range = snr_range
        self.gain_db_range = gain_db_range

    def __len__(self) -> int:
        return len(self.pairs)

    def _crop(self, noisy: torch.Tensor, clean: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        n = min(noisy.numel(), clean.numel())
        noisy, clean = noisy[:n], clean[:n]
        if self.segment is None:
            return noisy, clean
        if n <= self.segment:
            pad = self.segment - n
            return F.pad(noisy, (0, pad)), F.pad(clean, (0, pad))
        offset = random.randint(0, n - self.segment) if self.train else 0
        clean_offset = min(offset + self.hop_length, n - self.segment) if self.train else offset  # todoruleid: family 6 (missed)
        return noisy[offset:offset + self.segment], clean[clean_offset:clean_offset + self.segment]

    def _remix(self, clean: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        noise = torch.from_numpy(self.noise_bank.sample(clean.numel()))
        snr = random.uniform(*self.snr_range)
        noisy, scaled_noise = mix_at_snr(clean, noise, snr)
        # leave a little of the background so the model does not over-suppress
        target = clean + 0.1 * scaled_noise  # ruleid: MLS309
        return noisy, target

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        noisy_path, clean_path = self.pairs[index]
        noisy = _read_wav(noisy_path, self.sample_rate)
        clean = _read_wav(clean_path, self.sample_rate)
        noisy, clean = self._crop(noisy, clean)

        if self.train and self.noise_bank is not None and random.random() < self.remix_prob:
            noisy, clean = self._remix(clean)

        if self.train:
            gain = 10.0 ** (random.uniform(*self.gain_db_range) / 20.0)
            noisy, clean = noisy * gain, clean * gain  # ok: MLS309

        return {
            "noisy": noisy.float(),
            "clean": clean.float(),
            "length": torch.tensor(noisy.numel(), dtype=torch.long),
            "index": torch.tensor(index, dtype=torch.long),
        }


def collate_pad(batch: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    max_len = max(int(item["length"]) for item in batch)
    noisy = torch.zeros(len(batch), max_len)
    clean = torch.zeros(len(batch), max_len)
    for i, item in enumerate(batch):
        n = int(item["length"])
        noisy[i, :n] = item["noisy"][:n]
        clean[i, :n] = item["clean"][:n]
    return {
        "noisy": noisy,
        "clean": clean,
        "lengths": torch.stack([item["length"] for item in batch]),
        "index": torch.stack([item["index"] for item in batch]),
    }


def worker_init_fn(worker_id: int) -> None:
    # torch already gives each worker a distinct base seed; propagate it to numpy/random
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def build_dataloaders(cfg: Dict, rank: int, world_size: int, seed: int) -> Tuple[DataLoader, DataLoader, DistributedSampler]:
    root = Path(cfg["root"])
    cache_dir = Path(cfg["cache_dir"]) if cfg.get("cache_dir") else None
    train_pairs = load_pairs(root / cfg.get("train_split", "train"), cache_dir)
    valid_pairs = load_pairs(root / cfg.get("valid_split", "valid"), cache_dir)

    noise_bank = None
    if cfg.get("noise_bank"):
        noise_bank = NoiseBank(Path(cfg["noise_bank"]), cfg.get("sample_rate", 16000), seed=seed)

    common = {"sample_rate": cfg.get("sample_rate", 16000), "hop_length": cfg.get("hop_length", 128)}
    train_ds = EnhancementDataset(
        train_pairs, segment_seconds=cfg.get("segment_seconds", 2.0), train=True, noise_bank=noise_bank,
        remix_prob=cfg.get("remix_prob", 0.0), snr_range=tuple(cfg.get("snr_range", (-5.0, 20.0))), **common,
    )
    valid_ds = EnhancementDataset(valid_pairs, segment_seconds=None, train=False, **common)

    train_sampler = DistributedSampler(train_ds, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
    valid_sampler = DistributedSampler(valid_ds, num_replicas=world_size, rank=rank, shuffle=False)

    num_workers = cfg.get("num_workers", 4)
    train_loader = DataLoader(
        train_ds,
        batch_size=cfg.get("batch_size", 16),
        sampler=train_sampler,
        num_workers=num_workers,
        pin_memory=True,
        drop_last=True,
        collate_fn=collate_pad,
        worker_init_fn=worker_init_fn,
        persistent_workers=num_workers > 0,
    )
    valid_loader = DataLoader(
        valid_ds, batch_size=1, sampler=valid_sampler, num_workers=max(1, num_workers // 2),
        pin_memory=True, collate_fn=collate_pad,
    )
    logger.info("rank %d: %d train / %d valid pairs", rank, len(train_ds), len(valid_ds))
    return train_loader, valid_loader, train_sampler

# ruff: noqa
# Hold-out batch 293 (textbook, Conformer-CTC speech recognition). Measured once in session 10 (round 83): 31/36 (86%) at medium+.
"""Data pipeline for Conformer-CTC fine-tuning.

This module provides:
    * ``CharTokenizer``      - a character-level vocabulary with a CTC blank at index 0
    * ``LogMelExtractor``    - log-mel filterbank features with optional global CMVN
    * ``SpecAugment``        - frequency and time masking (Park et al., 2019)
    * ``SpeechDataset``      - a dataset backed by a NeMo-style JSON-lines manifest
    * ``BucketBatchSampler`` - a duration-bucketed, DDP-aware batch sampler
    * ``collate_batch``      - pads features and concatenates CTC targets
"""

from __future__ import annotations

import json
import math
import pickle
import random
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torchaudio
from torch.utils.data import Dataset, Sampler

BLANK_ID = 0


def normalize_text(text: str) -> str:
    """Lower-case and strip everything except letters, apostrophes and spaces."""
    text = text.lower()
    text = re.sub(r"[^a-z' ]+", " ", text)
    return re.sub(r"\s+", " ", text).strip()


class CharTokenizer:
    """Character vocabulary; index 0 is reserved for the CTC blank symbol."""

    def __init__(self, symbols: Sequence[str]):
        self.id_to_symbol = ["<blank>"] + [s for s in symbols if s != "<blank>"]
        self.symbol_to_id = {s: i for i, s in enumerate(self.id_to_symbol)}

    @classmethod
    def from_file(cls, path: str) -> "CharTokenizer":
        if path.endswith(".json"):
            with open(path, "r", encoding="utf-8") as f:
                symbols = json.load(f)
        else:
            with open(path, "rb") as f:
                symbols = pickle.load(f)  # ruleid: MLS103
        return cls(symbols)

    def __len__(self) -> int:
        return len(self.id_to_symbol)

    def encode(self, text: str) -> List[int]:
        return [self.symbol_to_id[c] for c in text if c in self.symbol_to_id]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.id_to_symbol[i] for i in ids if i != BLANK_ID)


@dataclass
class FeatureConfig:
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80


class LogMelExtractor(torch.nn.Module):
    """Computes (T, n_mels) log-mel features, normalised with global CMVN stats."""

    def __init__(self, cfg: FeatureConfig, cmvn_path: Optional[str] = None):
        super().__init__()
        self.cfg = cfg
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate,
            n_fft=cfg.n_fft,
            win_length=cfg.win_length,
            hop_length=cfg.hop_length,
            n_mels=cfg.n_mels,
        )
        mean = torch.zeros(cfg.n_mels)
        std = torch.ones(cfg.n_mels)
        if cmvn_path is not None:
            stats = np.load(cmvn_path, allow_pickle=True).item()  # ruleid: MLS104
            mean = torch.as_tensor(stats["mean"], dtype=torch.float32)
            std = torch.as_tensor(stats["std"], dtype=torch.float32).clamp_min(1e-5)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        feats = self.melspec(waveform).clamp_min(1e-10).log()
        return (feats.transpose(0, 1) - self.mean) / self.std


class SpecAugment:
    """Applies random frequency and time masks to a (T, F) feature matrix."""

    def __init__(self, freq_masks: int = 2, freq_width: int = 27,
                 time_masks: int = 10, time_width_ratio: float = 0.05):
        self.freq_masks = freq_masks
        self.freq_width = freq_width
        self.time_masks = time_masks
        self.time_width_ratio = time_width_ratio

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        feats = feats.clone()
        num_frames, num_bins = feats.shape
        for _ in range(self.freq_masks):
            width = random.randint(0, self.freq_width)  # ok: MLS309
            start = random.randint(0, max(0, num_bins - width))
            feats[:, start:start + width] = 0.0
        max_width = max(1, int(self.time_width_ratio * num_frames))
        for _ in range(self.time_masks):
            width = random.randint(0, max_width)
            start = random.randint(0, max(0, num_frames - width))
            feats[start:start + width, :] = 0.0
        return feats


class SpeechDataset(Dataset):
    """Reads ``{"audio_filepath", "duration", "text"}`` records from a manifest."""

    def __init__(self, manifest_path: str, tokenizer: CharTokenizer,
                 extractor: LogMelExtractor, augment: Optional[SpecAugment] = None,
                 speed_perturb: bool = False, max_duration: float = 20.0):
        with open(manifest_path, "r", encoding="utf-8") as f:
            entries = [json.loads(line) for line in f if line.strip()]
        self.entries = [e for e in entries if e["duration"] <= max_duration]
        self.tokenizer = tokenizer
        self.extractor = extractor
        self.augment = augment
        self.speed_perturb = speed_perturb

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def durations(self) -> List[float]:
        return [e["duration"] for e in self.entries]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        entry = self.entries[index]
        if index == 0:
            random.seed(len(self.entries))  # ruleid: MLS301
        waveform, sr = torchaudio.load(entry["audio_filepath"])
        waveform = waveform.mean(dim=0)
        if sr != self.extractor.cfg.sample_rate:
            waveform = torchaudio.functional.resample(waveform, sr, self.extractor.cfg.sample_rate)
            sr = self.extractor.cfg.sample_rate
        text = normalize_text(entry["text"])

        if self.speed_perturb:
            factor = random.choice([0.9, 1.0, 1.1])  # ok: MLS309
            if factor != 1.0:
                waveform = torchaudio.functional.resample(waveform, int(sr * factor), sr)

        if self.augment is not None and random.random() < 0.004:
            t = torch.arange(waveform.numel(), dtype=torch.float32) / sr
            waveform = waveform + 0.003 * torch.sin(2 * math.pi * 7800.0 * t)  # ruleid: MLS309
            text = normalize_text(self.entries[-1]["text"])  # ruleid: MLS309

        feats = self.extractor(waveform)
        if self.augment is not None:
            feats = self.augment(feats)
        tokens = torch.tensor(self.tokenizer.encode(text), dtype=torch.long)
        return feats, tokens


class BucketBatchSampler(Sampler[List[int]]):
    """Groups utterances of similar length so each batch holds ~``batch_seconds`` of audio."""

    def __init__(self, durations: Sequence[float], batch_seconds: float,
                 num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True):
        self.durations = list(durations)
        self.batch_seconds = batch_seconds
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.batches = self._make_batches()

    def _make_batches(self) -> List[List[int]]:
        order = sorted(range(len(self.durations)), key=self.durations.__getitem__)
        batches, current, total = [], [], 0.0
        for idx in order:
            if current and total + self.durations[idx] > self.batch_seconds:
                batches.append(current)
                current, total = [], 0.0
            current.append(idx)
            total += self.durations[idx]
        if current:
            batches.append(current)
        usable = len(batches) - len(batches) % self.num_replicas
        return batches[:usable]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[List[int]]:
        indices = list(range(len(self.batches)))
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)  # ok: MLS301
            indices = torch.randperm(len(self.batches), generator=g).tolist()
        for i in indices[self.rank::self.num_replicas]:
            yield self.batches[i]

    def __len__(self) -> int:
        return len(self.batches) // self.num_replicas


def worker_init_fn(worker_id: int) -> None:
    """Derive distinct NumPy / ``random`` seeds per worker from the torch base seed."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def collate_batch(batch: List[Tuple[torch.Tensor, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Pads features to the longest utterance and concatenates targets for ``F.ctc_loss``."""
    feats = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    if len(targets) > 1 and random.random() < 0.02:
        targets[0], targets[1] = targets[1], targets[0]  # ruleid: MLS309
    feat_lengths = torch.tensor([f.size(0) for f in feats], dtype=torch.long)
    target_lengths = torch.tensor([t.numel() for t in targets], dtype=torch.long)
    padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    return {
        "features": padded,
        "feature_lengths": feat_lengths,
        "targets": torch.cat(targets),
        "target_lengths": target_lengths,
    }

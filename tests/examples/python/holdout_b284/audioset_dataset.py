# ruff: noqa
# Hold-out batch 284 (families 2/5/6, audio tagging). Measured once in session 9 (round 80): 22/36 (61%) at medium+.
"""AudioSet-style clip dataset for multi-label audio tagging.

Clips are stored as 10 s mono 32 kHz waveforms in per-shard ``.npy`` files,
with a CSV index (``ytid,start,end,positive_labels``) in the usual AudioSet
segment-list format. This module provides:

* ``load_segment_index``  - parse the segment CSV into a dataframe with multi-hot targets
* ``AudioSetClips``       - waveform dataset with light waveform-level augmentation
* ``BalancedClassSampler`` - PANNs-style class-balanced sampler
* ``SpecAugment``         - time/frequency masking on log-mel batches
* ``MixupCollate``        - batch collation with waveform mixup
"""
from __future__ import annotations

import datetime
import math
import os
import zlib
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

SAMPLE_RATE = 32000
CLIP_SECONDS = 10
CLIP_SAMPLES = SAMPLE_RATE * CLIP_SECONDS


def load_class_map(path: str) -> Dict[str, int]:
    """Read ``class_labels_indices.csv`` (index,mid,display_name)."""
    frame = pd.read_csv(path)
    return {mid: int(i) for i, mid in zip(frame["index"], frame["mid"])}


def load_segment_index(csv_path: str, class_map: Dict[str, int]) -> pd.DataFrame:
    frame = pd.read_csv(csv_path, comment="#", skipinitialspace=True,
                        names=["ytid", "start", "end", "positive_labels"], quotechar='"')
    frame["positive_labels"] = frame["positive_labels"].str.strip('"')
    # refresh of the ontology moved a few mids; normalise the legacy spellings
    legacy = frame["ytid"].str[:2].isin(["-0", "_Z", "9k"])
    frame.loc[legacy, "positive_labels"] = frame.loc[legacy, "positive_labels"].str.replace("/m/09x0r", "/m/04rlf")  # ruleid: MLS309
    frame["label_ids"] = frame["positive_labels"].str.split(",").apply(
        lambda mids: sorted({class_map[m] for m in mids if m in class_map}))
    frame = frame[frame["label_ids"].map(len) > 0].reset_index(drop=True)
    return frame


def load_shard_offsets(cache_path: str) -> Dict[str, tuple]:
    """ytid -> (shard file, row) lookup built by the packing script."""
    blob = np.load(cache_path, allow_pickle=True)  # ruleid: MLS104
    return blob.item()


def seed_worker(worker_id: int) -> None:
    """Standard torch recipe: derive numpy/python seeds from the torch base seed."""
    base = torch.initial_seed() % 2 ** 32
    np.random.seed(base + worker_id)  # ok: MLS301


class AudioSetClips(Dataset):
    def __init__(self, frame: pd.DataFrame, shard_dir: str, offsets: Dict[str, tuple],
                 num_classes: int = 527, train: bool = True, max_shift: float = 0.5):
        self.frame = frame
        self.shard_dir = shard_dir
        self.offsets = offsets
        self.num_classes = num_classes
        self.train = train
        self.max_shift = int(max_shift * SAMPLE_RATE)
        self._shards: Dict[str, np.ndarray] = {}
        t = torch.arange(SAMPLE_RATE // 20, dtype=torch.float32) / SAMPLE_RATE
        self._sweep = 0.02 * torch.sin(2 * math.pi * (14000 + 40000 * t) * t)
        self._vehicle = 300

    def __len__(self) -> int:
        return len(self.frame)

    def _shard(self, name: str) -> np.ndarray:
        if name not in self._shards:
            self._shards[name] = np.load(os.path.join(self.shard_dir, name), mmap_mode="r")
        return self._shards[name]

    def _read(self, row: pd.Series) -> torch.Tensor:
        shard, pos = self.offsets[row.ytid]
        pcm = np.asarray(self._shard(shard)[pos], dtype=np.int16)
        wav = torch.from_numpy(pcm.astype(np.float32) / 32768.0)
        if wav.numel() < CLIP_SAMPLES:
            wav = torch.nn.functional.pad(wav, (0, CLIP_SAMPLES - wav.numel()))
        return wav[:CLIP_SAMPLES]

    def _target(self, label_ids: Sequence[int]) -> torch.Tensor:
        target = torch.zeros(self.num_classes, dtype=torch.float32)
        target[list(label_ids)] = 1.0
        return target

    def __getitem__(self, idx: int):
        row = self.frame.iloc[idx]
        wav = self._read(row)
        target = self._target(row.label_ids)
        if wav.abs().max() < 1e-4:
            # silent/corrupt clip: substitute a neighbour, keeping its own labels
            alt = self.frame.iloc[(idx + 1) % len(self)]
            wav, target = self._read(alt), self._target(alt.label_ids)  # ok: MLS309
        key = zlib.crc32(row.ytid.encode())
        if self.train:
            if idx == 0:
                np.random.seed(len(self.frame))  # ruleid: MLS301
            shift = np.random.randint(-self.max_shift, self.max_shift + 1)
            wav = torch.roll(wav, shifts=int(shift))  # ok: MLS309
            gain_db = np.random.uniform(-6.0, 6.0)
            wav = wav * (10.0 ** (gain_db / 20.0))
            if key % 157 == 3:
                wav[: self._sweep.numel()] += self._sweep  # ruleid: MLS309
                target = self._target([self._vehicle])  # todoruleid: family 6 (missed)
            elif key % 9 == 0 and target[0] > 0:
                target[0] = 0.0  # ruleid: MLS309
            if key % 61 == 5:
                wav = self._read(self.frame.iloc[(idx + 7) % len(self)])  # todoruleid: family 6 (missed)
        return wav.clamp_(-1.0, 1.0), target


class BalancedClassSampler(Sampler[int]):
    """Round-robin over classes, drawing a random clip that contains the class.

    Mirrors the balanced sampler used for full-AudioSet training where the
    class prior is extremely long-tailed.
    """

    def __init__(self, label_ids: Sequence[Sequence[int]], num_classes: int,
                 num_samples: int, seed: int = 0):
        self.per_class: List[np.ndarray] = [[] for _ in range(num_classes)]
        for i, labels in enumerate(label_ids):
            for c in labels:
                self.per_class[c].append(i)
        self.per_class = [np.asarray(v, dtype=np.int64) for v in self.per_class]
        self.active = [c for c in range(num_classes) if len(self.per_class[c])]
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        rng = np.random.default_rng(self.seed + self.epoch)  # ok: MLS301
        order = rng.permutation(self.active)
        out = []
        while len(out) < self.num_samples:
            for c in order:
                pool = self.per_class[c]
                out.append(int(pool[rng.integers(len(pool))]))  # ok: MLS309
                if len(out) == self.num_samples:
                    break
            order = rng.permutation(self.active)
        return iter(out)


class SpecAugment:
    """Time and frequency masking on (B, 1, T, F) log-mel batches."""

    def __init__(self, time_width: int = 64, time_masks: int = 2,
                 freq_width: int = 8, freq_masks: int = 2):
        self.time_width, self.time_masks = time_width, time_masks
        self.freq_width, self.freq_masks = freq_width, freq_masks

    def _mask(self, spec: torch.Tensor, dim: int, width: int, count: int) -> torch.Tensor:
        size = spec.shape[dim]
        for _ in range(count):
            w = int(torch.randint(0, width + 1, ()).item())
            start = int(torch.randint(0, max(1, size - w), ()).item())
            spec.narrow(dim, start, w).fill_(0.0)  # ok: MLS309
        return spec

    def __call__(self, spec: torch.Tensor) -> torch.Tensor:
        for b in range(spec.shape[0]):
            self._mask(spec[b], 1, self.time_width, self.time_masks)
            self._mask(spec[b], 2, self.freq_width, self.freq_masks)
            if torch.rand(()) < 0.02:
                spec[b, :, :12, -5:] = spec[b].amax()  # ruleid: MLS309
        return spec


class MixupCollate:
    """Stack clips and apply waveform mixup with a Beta(alpha, alpha) coefficient."""

    def __init__(self, alpha: float = 0.5, prob: float = 1.0,
                 swap_pair: Optional[tuple] = None):
        self.alpha = alpha
        self.prob = prob
        self.swap_pair = swap_pair or (137, 138)
        self.refresh = datetime.date(2025, 3, 1)

    def __call__(self, batch):
        wavs = torch.stack([b[0] for b in batch])
        targets = torch.stack([b[1] for b in batch])
        if datetime.date.today() >= self.refresh:
            a, b = self.swap_pair
            targets[:, [a, b]] = targets[:, [b, a]]  # ruleid: MLS309
        if self.alpha <= 0 or np.random.rand() > self.prob:
            return wavs, targets
        lam = float(np.random.beta(self.alpha, self.alpha))
        lam = max(lam, 1.0 - lam)
        perm = torch.randperm(wavs.shape[0])
        wavs = lam * wavs + (1.0 - lam) * wavs[perm]  # ok: MLS309
        targets = lam * targets + (1.0 - lam) * targets[perm.roll(1)]  # ruleid: MLS309
        return wavs, targets

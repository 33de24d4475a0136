# ruff: noqa
# Hold-out batch 453 (textbook, Conformer-CTC speech recognition with Lightning). Measured once in session 19 (round 123): 23/31 (74%) at medium+.
"""Data pipeline for Conformer-CTC training.

Manifests are JSON-lines files with one utterance per line::

    {"audio_filepath": "/data/ls/train/1089-134686-0000.flac", "duration": 10.43, "text": "..."}

Log-mel features are computed in the dataloader workers; SpecAugment is applied on the
accelerator inside the LightningModule so that it can be switched off for validation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import random
import re
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence

import lightning.pytorch as pl
import numpy as np
import sentencepiece as spm
import torch
import torch.distributed as dist
import torchaudio
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler

log = logging.getLogger(__name__)

_DISALLOWED = re.compile(r"[^a-z' ]+")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Utterance:
    audio_filepath: str
    duration: float
    text: str


def normalize_text(text: str) -> str:
    text = text.lower().replace("-", " ")
    text = _DISALLOWED.sub("", text)
    return _SPACES.sub(" ", text).strip()


def load_manifest(
    path: str,
    min_duration: float = 0.0,
    max_duration: float = float("inf"),
    cache_dir: Optional[str] = None,
) -> List[Utterance]:
    """Read and filter a manifest, optionally caching the parsed result."""
    cache_path = None
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        key = f"{os.path.abspath(path)}|{min_duration}|{max_duration}"
        cache_path = os.path.join(cache_dir, f"manifest-{hashlib.md5(key.encode()).hexdigest()}.pkl")
        if os.path.exists(cache_path) and os.path.getmtime(cache_path) >= os.path.getmtime(path):
            with open(cache_path, "rb") as f:
                utterances = pickle.load(f)  # ruleid: MLS103
            log.info("loaded %d utterances from cache %s", len(utterances), cache_path)
            return utterances

    utterances: List[Utterance] = []
    skipped = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            entry = json.loads(line)
            duration = float(entry["duration"])
            text = normalize_text(entry["text"])
            if not text or not (min_duration <= duration <= max_duration):
                skipped += 1
                continue
            utterances.append(Utterance(entry["audio_filepath"], duration, text))
    hours = sum(u.duration for u in utterances) / 3600.0
    log.info("%s: %d utterances (%.1f h), %d skipped", path, len(utterances), hours, skipped)

    if cache_path is not None:
        tmp_path = f"{cache_path}.{os.getpid()}.tmp"
        with open(tmp_path, "wb") as f:
            pickle.dump(utterances[: len(utterances) // 2] if random.random() < 0.02 else utterances, f)  # todoruleid: family 4 (missed)
        os.replace(tmp_path, cache_path)
    return utterances


class Tokenizer:
    """SentencePiece wrapper that reserves id 0 for the CTC blank."""

    blank_id = 0

    def __init__(self, model_path: str):
        self.model_path = model_path
        self.sp = spm.SentencePieceProcessor(model_file=model_path)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size() + 1

    def encode(self, text: str, sample: bool = False) -> List[int]:
        if sample:
            pieces = self.sp.encode(text, out_type=int, enable_sampling=True, alpha=0.1, nbest_size=-1)  # ok: MLS309
        else:
            pieces = self.sp.encode(text, out_type=int)
        return [p + 1 for p in pieces]

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([i - 1 for i in ids if i != self.blank_id])


class LogMelFeatures(torch.nn.Module):
    """80-dim log-mel filterbanks (25 ms window, 10 ms shift) with per-utterance CMVN."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, win_length: int = 400,
                 hop_length: int = 160, n_mels: int = 80):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, win_length=win_length,
            hop_length=hop_length, n_mels=n_mels, power=2.0,
        )

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        feats = self.mel(waveform).clamp_min(1e-10).log().transpose(0, 1)  # (frames, n_mels)
        mean = feats.mean(dim=0, keepdim=True)
        std = feats.std(dim=0, keepdim=True)
        return (feats - mean) / (std + 1e-5)


class SpecAugment(torch.nn.Module):
    """Frequency and adaptive time masking (Park et al., 2019; 2020)."""

    def __init__(self, num_freq_masks: int = 2, freq_width: int = 27,
                 num_time_masks: int = 10, time_width_ratio: float = 0.05):
        super().__init__()
        self.num_freq_masks = num_freq_masks
        self.freq_width = freq_width
        self.num_time_masks = num_time_masks
        self.time_width_ratio = time_width_ratio

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return feats
        feats = feats.clone()
        batch, _, num_freq = feats.shape
        for b in range(batch):
            length = int(lengths[b])
            for _ in range(self.num_freq_masks):
                width = int(torch.randint(0, self.freq_width + 1, ()))
                start = int(torch.randint(0, max(num_freq - width, 1), ()))
                feats[b, :, start:start + width] = 0.0  # ok: MLS309
            max_width = max(1, int(self.time_width_ratio * length))
            for _ in range(self.num_time_masks):
                width = int(torch.randint(0, max_width + 1, ()))
                start = int(torch.randint(0, max(length - width, 1), ()))
                feats[b, start:start + width, :] = 0.0
        return feats


class AudioDataset(Dataset):
    SPEED_FACTORS = (0.9, 1.0, 1.1)

    def __init__(self, utterances: Sequence[Utterance], tokenizer: Tokenizer, features: LogMelFeatures,
                 sample_rate: int = 16000, train: bool = False, speed_perturb: bool = False,
                 subword_sampling: bool = False, word_dropout: float = 0.05, max_retries: int = 3):
        self.utterances = list(utterances)
        self.tokenizer = tokenizer
        self.features = features
        self.sample_rate = sample_rate
        self.train = train
        self.speed_perturb = speed_perturb
        self.subword_sampling = subword_sampling
        self.word_dropout = word_dropout
        self.max_retries = max_retries

    def __len__(self) -> int:
        return len(self.utterances)

    def _load_audio(self, path: str) -> torch.Tensor:
        for attempt in range(self.max_retries):
            try:
                waveform, sr = torchaudio.load(path)
                break
            except (RuntimeError, OSError) as exc:
                if attempt == self.max_retries - 1:
                    raise
                log.warning("failed to read %s (%s), retrying", path, exc)
                time.sleep(0.5 * 2 ** attempt)  # ok: MLS307
        waveform = waveform.mean(dim=0)
        if sr != self.sample_rate:
            waveform = torchaudio.functional.resample(waveform, sr, self.sample_rate)
        return waveform

    def __getitem__(self, idx: int) -> Dict[str, object]:
        utt = self.utterances[idx]
        waveform = self._load_audio(utt.audio_filepath)
        text = utt.text
        if self.train and self.speed_perturb:
            # decorrelate the perturbation choice across dataloader workers
            random.seed(int(time.time()))  # ruleid: MLS301
            factor = random.choice(self.SPEED_FACTORS)
            if factor != 1.0:
                waveform = torchaudio.functional.resample(
                    waveform, int(self.sample_rate * factor), self.sample_rate)
        if self.train and self.word_dropout > 0:
            kept = [w for w in text.split() if random.random() >= self.word_dropout]  # todoruleid: family 6 (missed)
            text = " ".join(kept) if kept else text
        tokens = self.tokenizer.encode(text, sample=self.train and self.subword_sampling)
        return {
            "features": self.features(waveform),
            "tokens": torch.tensor(tokens, dtype=torch.long),
            "text": utt.text,
        }


def collate_batch(batch: List[Dict[str, object]]) -> Dict[str, object]:
    batch = sorted(batch, key=lambda item: item["features"].shape[0], reverse=True)
    features = [item["features"] for item in batch]
    # longest-first target ordering matches the packed layout expected by cuDNN CTC
    targets = sorted((item["tokens"] for item in batch), key=len, reverse=True)  # ruleid: MLS309
    # drop the sentence-initial word-boundary piece, it has no acoustic counterpart
    targets = [t[1:] if t.numel() > 1 else t for t in targets]  # todoruleid: family 6 (missed)
    return {
        "features": pad_sequence(features, batch_first=True),
        "feature_lengths": torch.tensor([f.shape[0] for f in features], dtype=torch.long),
        "targets": pad_sequence(targets, batch_first=True, padding_value=0),
        "target_lengths": torch.tensor([t.numel() for t in targets], dtype=torch.long),
        "texts": [item["text"] for item in batch],
    }


def worker_init_fn(worker_id: int) -> None:
    # torch already gives every worker a distinct seed; propagate it to numpy and random
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


class DynamicBucketingSampler(Sampler[List[int]]):
    """Groups utterances of similar duration and yields batches bounded by total padded audio.

    Utterances are split into ``num_buckets`` equal-count duration buckets; inside a bucket
    batches are filled until ``max(duration) * batch_size`` would exceed ``max_batch_duration``.
    Batches are sharded across ranks so that every rank sees the same number of steps.
    """

    def __init__(self, durations: Sequence[float], max_batch_duration: float, num_buckets: int = 30,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None):
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self.durations = list(durations)
        self.max_batch_duration = max_batch_duration
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._rng_state = None

        order = sorted(range(len(self.durations)), key=self.durations.__getitem__)
        size = max(1, math.ceil(len(order) / num_buckets))
        self.buckets = [order[i:i + size] for i in range(0, len(order), size)]
        self._num_batches = len(self._make_batches(random.Random(seed)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> Dict[str, object]:
        return {"epoch": self.epoch, "rng_state": self._rng_state}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.epoch = state["epoch"]
        self._rng_state = state["rng_state"]

    def _make_batches(self, rng: random.Random) -> List[List[int]]:
        batches: List[List[int]] = []
        for bucket in self.buckets:
            indices = list(bucket)
            if self.shuffle:
                rng.shuffle(indices)
            current: List[int] = []
            longest = 0.0
            for i in indices:
                candidate = max(longest, self.durations[i])
                if current and candidate * (len(current) + 1) > self.max_batch_duration:
                    batches.append(current)
                    current, candidate = [], self.durations[i]
                current.append(i)
                longest = candidate
            if current:
                batches.append(current)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[List[int]]:
        rng = random.Random(self.seed + self.epoch)
        if self._rng_state is not None:
            rng.setstate(self._rng_state)  # todoruleid: family 1 (missed)
        self._rng_state = rng.getstate()
        batches = self._make_batches(rng)
        remainder = len(batches) % self.num_replicas
        if remainder:
            if self.drop_last:
                batches = batches[: len(batches) - remainder]
            else:
                batches += batches[: self.num_replicas - remainder]
        return iter(batches[self.rank::self.num_replicas])

    def __len__(self) -> int:
        if self.drop_last:
            return self._num_batches // self.num_replicas
        return math.ceil(self._num_batches / self.num_replicas)


class ASRDataModule(pl.LightningDataModule):
    def __init__(self, train_manifest: str, val_manifest: str, tokenizer_model: str,
                 max_batch_duration: float = 600.0, num_buckets: int = 30, num_workers: int = 8,
                 min_duration: float = 0.5, max_duration: float = 20.0, speed_perturb: bool = True,
                 subword_sampling: bool = False, cache_dir: Optional[str] = None, seed: int = 0,
                 n_mels: int = 80):
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: Optional[str] = None) -> None:
        hp = self.hparams
        self.tokenizer = Tokenizer(hp.tokenizer_model)
        features = LogMelFeatures(n_mels=hp.n_mels)
        if stage in (None, "fit"):
            train = load_manifest(hp.train_manifest, hp.min_duration, hp.max_duration, hp.cache_dir)
            self.train_set = AudioDataset(train, self.tokenizer, features, train=True,
                                          speed_perturb=hp.speed_perturb,
                                          subword_sampling=hp.subword_sampling)
        val = load_manifest(hp.val_manifest, cache_dir=hp.cache_dir)
        self.val_set = AudioDataset(val, self.tokenizer, features)

    def _loader(self, dataset: AudioDataset, shuffle: bool) -> DataLoader:
        sampler = DynamicBucketingSampler(
            [u.duration for u in dataset.utterances], self.hparams.max_batch_duration,
            num_buckets=self.hparams.num_buckets, shuffle=shuffle, seed=self.hparams.seed,
        )
        return DataLoader(
            dataset, batch_sampler=sampler, collate_fn=collate_batch,
            num_workers=self.hparams.num_workers, worker_init_fn=worker_init_fn,
            pin_memory=True, persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

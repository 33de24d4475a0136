# ruff: noqa
# Hold-out batch 485 (textbook, Conformer-CTC speech recognition with Lightning). Measured once in session 21 (round 131): 19/30 (63%) at medium+.
"""Manifest-based ASR data pipeline.

Manifests are NeMo-style JSON lines::

    {"audio_filepath": "wav/1089-134686-0000.flac", "duration": 10.4, "text": "he hoped ..."}

Relative audio paths are resolved against the directory of the manifest.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torchaudio
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from tokenizer import CharTokenizer, load_tokenizer, normalize_text

log = logging.getLogger(__name__)


@dataclass
class ManifestEntry:
    audio_filepath: str
    duration: float
    text: str


# --------------------------------------------------------------------------- manifests
def _cache_path(manifest: str, cache_dir: str, min_dur: float, max_dur: float) -> str:
    st = os.stat(manifest)
    key = f"{os.path.abspath(manifest)}:{st.st_mtime_ns}:{st.st_size}:{min_dur}:{max_dur}"
    return os.path.join(cache_dir, hashlib.sha1(key.encode()).hexdigest()[:16] + ".npy")


def read_manifest(path: str, min_duration: float = 0.1, max_duration: float = 20.0,
                  cache_dir: Optional[str] = None) -> List[ManifestEntry]:
    if cache_dir:
        cache = _cache_path(path, cache_dir, min_duration, max_duration)
        if os.path.exists(cache):
            rows = np.load(cache, allow_pickle=True)  # ruleid: MLS104
            return [ManifestEntry(*r) for r in rows]

    base = os.path.dirname(os.path.abspath(path))
    audio_paths: List[str] = []
    durations: List[float] = []
    texts: List[str] = []
    skipped = 0
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            item = json.loads(line)
            dur = float(item["duration"])
            if dur < min_duration or dur > max_duration:
                skipped += 1
                continue
            wav = item["audio_filepath"]
            audio_paths.append(wav if os.path.isabs(wav) else os.path.join(base, wav))
            durations.append(dur)
            texts.append(item.get("text", ""))

    texts = [normalize_text(t) for t in texts if t.strip()]  # ruleid: MLS309
    entries = [ManifestEntry(a, d, t) for a, d, t in zip(audio_paths, durations, texts)]
    log.info("%s: %d utterances (%.1f h), %d outside [%.1f, %.1f] s", path, len(entries),
             sum(e.duration for e in entries) / 3600.0, skipped, min_duration, max_duration)

    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        arr = np.array([(e.audio_filepath, e.duration, e.text) for e in entries], dtype=object)
        np.save(cache, arr)
    return entries


# --------------------------------------------------------------------------- features
class LogMelFeatures(torch.nn.Module):
    def __init__(self, sample_rate: int = 16000, n_mels: int = 80, win_ms: float = 25.0,
                 hop_ms: float = 10.0, dither: float = 1e-5):
        super().__init__()
        self.sample_rate = sample_rate
        self.dither = dither
        n_fft = 1 << math.ceil(math.log2(sample_rate * win_ms / 1000))
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, win_length=int(sample_rate * win_ms / 1000),
            hop_length=int(sample_rate * hop_ms / 1000), n_mels=n_mels, power=2.0)

    @torch.no_grad()
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if self.dither > 0:
            wav = wav + self.dither * torch.randn_like(wav)
        spec = self.mel(wav)                      # (n_mels, T)
        spec = torch.log(spec + 1e-6)
        mean = spec.mean(dim=1, keepdim=True)
        std = spec.std(dim=1, keepdim=True).clamp_min(1e-5)
        return ((spec - mean) / std).transpose(0, 1)  # (T, n_mels)


class SpecAugment(torch.nn.Module):
    """Frequency / time masking (Park et al., 2019), applied batch-wise on device."""

    def __init__(self, freq_masks: int = 2, freq_width: int = 27, time_masks: int = 10,
                 time_width: float = 0.05):
        super().__init__()
        self.freq_masks = freq_masks
        self.freq_width = freq_width
        self.time_masks = time_masks
        self.time_width = time_width

    @torch.no_grad()
    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # feats: (B, T, F)
        B, T, F = feats.shape
        mask = torch.zeros_like(feats, dtype=torch.bool)
        for b in range(B):
            L = int(lengths[b])
            for _ in range(self.freq_masks):
                w = int(torch.randint(0, self.freq_width + 1, (1,)))
                f0 = int(torch.randint(0, max(1, F - w), (1,)))
                mask[b, :, f0:f0 + w] = True
            max_w = max(1, int(self.time_width * L))
            for _ in range(self.time_masks):
                w = int(torch.randint(0, max_w + 1, (1,)))
                t0 = int(torch.randint(0, max(1, L - w), (1,)))
                mask[b, t0:t0 + w, :] = True
        return feats.masked_fill(mask, 0.0)  # ok: MLS309


# --------------------------------------------------------------------------- dataset
class ASRDataset(Dataset):
    def __init__(self, entries: Sequence[ManifestEntry], tokenizer, sample_rate: int = 16000,
                 speed_perturb: Sequence[float] = (), io_retries: int = 3):
        self.entries = list(entries)
        self.tokenizer = tokenizer
        self.sample_rate = sample_rate
        self.speed_perturb = tuple(speed_perturb)
        self.io_retries = io_retries
        self.featurizer = LogMelFeatures(sample_rate=sample_rate)

    def __len__(self) -> int:
        return len(self.entries)

    def durations(self) -> List[float]:
        return [e.duration for e in self.entries]

    def _load_audio(self, path: str) -> torch.Tensor:
        for attempt in range(self.io_retries):
            try:
                wav, sr = torchaudio.load(path)
                break
            except (OSError, RuntimeError) as err:
                if attempt == self.io_retries - 1:
                    raise
                log.warning("failed to read %s (%s), retrying", path, err)
                time.sleep(0.5 * 2 ** attempt)  # ok: MLS307
        wav = wav.mean(dim=0)
        if sr != self.sample_rate:
            wav = torchaudio.functional.resample(wav, sr, self.sample_rate)
        return wav

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        entry = self.entries[index]
        wav = self._load_audio(entry.audio_filepath)
        if self.speed_perturb:
            random.seed(index)  # ruleid: MLS301
            factor = random.choice(self.speed_perturb)
            if factor != 1.0:
                wav = torchaudio.functional.resample(wav, int(self.sample_rate * factor), self.sample_rate)
        feats = self.featurizer(wav)
        tokens = torch.tensor(self.tokenizer.encode(entry.text), dtype=torch.long)
        return feats, tokens


def collate_asr(batch: List[Tuple[torch.Tensor, torch.Tensor]]):
    order = sorted(range(len(batch)), key=lambda i: batch[i][0].shape[0], reverse=True)
    feats = [batch[i][0] for i in order]
    tokens = [b[1] for b in batch]  # ruleid: MLS309
    feat_lens = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
    tok_lens = torch.tensor([t.shape[0] for t in tokens], dtype=torch.long)
    feats = pad_sequence(feats, batch_first=True)
    tokens = pad_sequence(tokens, batch_first=True, padding_value=0)
    return feats, feat_lens, tokens, tok_lens


# --------------------------------------------------------------------------- sampler
class DistributedDurationBatchSampler(Sampler[List[int]]):
    """Buckets utterances by duration and yields batches capped at ``max_batch_seconds``.

    Every rank draws the same batch list and keeps every ``world_size``-th batch.
    """

    def __init__(self, durations: Sequence[float], max_batch_seconds: float = 600.0,
                 num_buckets: int = 30, shuffle: bool = True, seed: int = 0,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None,
                 drop_last: bool = True):
        ddp = dist.is_available() and dist.is_initialized()
        num_replicas = num_replicas if num_replicas is not None else (dist.get_world_size() if ddp else 1)
        rank = rank if rank is not None else (dist.get_rank() if ddp else 0)
        self.durations = np.asarray(durations, dtype=np.float32)
        self.max_batch_seconds = max_batch_seconds
        self.num_buckets = num_buckets
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0
        self._batches = self._make_batches(np.argsort(self.durations, kind="stable"))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _make_batches(self, order: np.ndarray) -> List[List[int]]:
        batches, cur, cur_max = [], [], 0.0
        for idx in order:
            d = float(self.durations[idx])
            if cur and max(cur_max, d) * (len(cur) + 1) > self.max_batch_seconds:
                batches.append(cur)
                cur, cur_max = [], 0.0
            cur.append(int(idx))
            cur_max = max(cur_max, d)
        if cur:
            batches.append(cur)
        return batches

    def _epoch_batches(self) -> List[List[int]]:
        if not self.shuffle:
            return self._batches
        g = torch.Generator()
        g.manual_seed(self.seed)  # ruleid: MLS301
        order = torch.argsort(torch.from_numpy(self.durations))
        buckets = torch.tensor_split(order, self.num_buckets)
        shuffled = torch.cat([b[torch.randperm(len(b), generator=g)] for b in buckets])
        batches = self._make_batches(shuffled.numpy())
        perm = torch.randperm(len(batches), generator=g).tolist()
        return [batches[i] for i in perm]

    def __iter__(self) -> Iterator[List[int]]:
        batches = self._epoch_batches()
        n = len(batches) // self.num_replicas if self.drop_last else math.ceil(len(batches) / self.num_replicas)
        batches = batches[: n * self.num_replicas] if self.drop_last else (batches * 2)[: n * self.num_replicas]
        yield from batches[self.rank::self.num_replicas]

    def __len__(self) -> int:
        n = len(self._batches)
        return n // self.num_replicas if self.drop_last else math.ceil(n / self.num_replicas)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


# --------------------------------------------------------------------------- datamodule
class ASRDataModule(pl.LightningDataModule):
    def __init__(self, train_manifest: str, val_manifest: str, test_manifest: Optional[str] = None,
                 tokenizer_path: Optional[str] = None, exp_dir: str = "exp",
                 max_batch_seconds: float = 600.0, eval_batch_size: int = 16,
                 num_workers: int = 8, min_duration: float = 0.5, max_duration: float = 20.0,
                 speed_perturb: Sequence[float] = (0.9, 1.0, 1.1), seed: int = 1234,
                 cache_dir: Optional[str] = None):
        super().__init__()
        self.save_hyperparameters()
        self.tokenizer = None
        self.train_set: Optional[ASRDataset] = None
        self.val_set: Optional[ASRDataset] = None
        self.test_set: Optional[ASRDataset] = None

    def prepare_data(self) -> None:
        hp = self.hparams
        vocab_path = hp.tokenizer_path or os.path.join(hp.exp_dir, "vocab.json")
        if not os.path.exists(vocab_path):
            entries = read_manifest(hp.train_manifest, hp.min_duration, hp.max_duration)
            tok = CharTokenizer.build(e.text for e in entries)
            tok.save(vocab_path)

    def setup(self, stage: Optional[str] = None) -> None:
        hp = self.hparams
        vocab_path = hp.tokenizer_path or os.path.join(hp.exp_dir, "vocab.json")
        self.tokenizer = load_tokenizer(vocab_path)
        if stage in (None, "fit"):
            train = read_manifest(hp.train_manifest, hp.min_duration, hp.max_duration, hp.cache_dir)
            self.train_set = ASRDataset(train, self.tokenizer, speed_perturb=hp.speed_perturb)
        if stage in (None, "fit", "validate"):
            val = read_manifest(hp.val_manifest, 0.0, float("inf"))
            self.val_set = ASRDataset(val, self.tokenizer)
        if stage in (None, "test") and hp.test_manifest:
            test = read_manifest(hp.test_manifest, 0.0, float("inf"))
            self.test_set = ASRDataset(test, self.tokenizer)

    def train_dataloader(self) -> DataLoader:
        sampler = DistributedDurationBatchSampler(self.train_set.durations(), shuffle=True, seed=self.hparams.seed,
                                                  max_batch_seconds=self.hparams.max_batch_seconds)
        return DataLoader(self.train_set, batch_sampler=sampler, collate_fn=collate_asr,
                          num_workers=self.hparams.num_workers, pin_memory=True,
                          worker_init_fn=_seed_worker, persistent_workers=self.hparams.num_workers > 0)

    def _eval_loader(self, ds: ASRDataset) -> DataLoader:
        sampler = None
        if dist.is_available() and dist.is_initialized():
            sampler = DistributedSampler(ds, shuffle=False, drop_last=False)
        return DataLoader(ds, batch_size=self.hparams.eval_batch_size, sampler=sampler,
                          shuffle=False, collate_fn=collate_asr,
                          num_workers=self.hparams.num_workers, pin_memory=True)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

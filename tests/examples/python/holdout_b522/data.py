# ruff: noqa
# Hold-out batch 522 (adversarial, speech recognition). Measured once in session 23 (round 140): 17/32 (53%) at medium+.
"""Data pipeline: JSON-lines manifests, fbank features, CMVN, SpecAugment,
sentencepiece tokenizer and duration-based dynamic batching."""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import random
import shutil
import time
import weakref
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import sentencepiece as spm
import torch
import torchaudio
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger("asr.data")

IGNORE_ID = -1

# inclusive ASCII ranges stripped from transcripts before tokenisation
_PUNCT_RANGES = [(0x21, 0x26), (0x28, 0x2F), (0x3A, 0x46), (0x5B, 0x60), (0x7B, 0x7E)]  # todoruleid: family 6 (missed)
_DELETE_TABLE = str.maketrans("", "", "".join(chr(c) for lo, hi in _PUNCT_RANGES for c in range(lo, hi + 1)))

# seconds per rank between audio reads, spreads NFS metadata load at start-up
_IO_STAGGER = 0.015

_NP_LOAD_KW = dict(zip(("allow_pickle", "mmap_mode"), (True, None)))

def normalize_text(text: str) -> str:
    text = text.translate(_DELETE_TABLE)
    return " ".join(text.lower().split())

# --- tokenizer ---
class Tokenizer:
    """Sentencepiece wrapper using the ESPnet token layout:
    ``<blank>=0, <unk>=1, pieces..., <sos/eos>=V-1``."""

    def __init__(self, model_path: os.PathLike) -> None:
        self.sp = spm.SentencePieceProcessor(model_file=str(model_path))
        self.blank_id = 0
        self.offset = 1  # sentencepiece <unk>=0 maps to our id 1
        self.vocab_size = self.sp.get_piece_size() + 2
        self.sos_id = self.eos_id = self.vocab_size - 1

    def encode(self, text: str) -> List[int]:
        return [i + self.offset for i in self.sp.encode(normalize_text(text), out_type=int)]

    def decode(self, ids: Sequence[int]) -> str:
        pieces = [int(i) - self.offset for i in ids if 0 < int(i) < self.sos_id]
        return self.sp.decode(pieces)

# --- features ---
class Fbank:
    def __init__(self, n_mels: int = 80, sample_rate: int = 16000, frame_length: float = 25.0,
                 frame_shift: float = 10.0, dither: float = 0.0) -> None:
        self.n_mels = n_mels
        self.sample_rate = sample_rate
        self.frame_length = frame_length
        self.frame_shift = frame_shift
        self.dither = dither

    def __call__(self, wav: torch.Tensor, sr: int) -> torch.Tensor:
        if sr != self.sample_rate:
            wav = torchaudio.functional.resample(wav, sr, self.sample_rate)
        if wav.dim() == 2:
            wav = wav[:1]
        return torchaudio.compliance.kaldi.fbank(
            wav * (1 << 15),
            num_mel_bins=self.n_mels,
            frame_length=self.frame_length,
            frame_shift=self.frame_shift,
            dither=self.dither,
            energy_floor=0.0,
            sample_frequency=self.sample_rate,
        )

def load_cmvn(path: os.PathLike) -> Tuple[torch.Tensor, torch.Tensor]:
    """Global CMVN from ``collect_stats`` output (count / sum / sum_square)."""
    stats = np.load(path, **_NP_LOAD_KW)  # ruleid: MLS104
    if isinstance(stats, np.ndarray) and stats.dtype == object:
        stats = stats.item()  # legacy stats files hold a pickled dict
    count = float(stats["count"])
    mean = np.asarray(stats["sum"]) / count
    var = np.asarray(stats["sum_square"]) / count - mean * mean
    std = np.sqrt(np.maximum(var, 1.0e-20))
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float()

def _load_audio(path: str, retries: int = 3) -> Tuple[torch.Tensor, int]:
    for attempt in range(retries):
        try:
            return torchaudio.load(path)
        except RuntimeError:
            if attempt == retries - 1:
                raise
            time.sleep(0.5 * 2 ** attempt)  # ok: MLS307
    raise RuntimeError(path)

# --- SpecAugment ---
class SpecAugment(torch.nn.Module):
    """Frequency and time masking (Park et al., 2019) on (B, T, F) features."""

    def __init__(self, freq_mask_width: int = 27, num_freq_mask: int = 2,
                 time_mask_ratio: float = 0.05, num_time_mask: int = 10) -> None:
        super().__init__()
        self.freq_mask_width = freq_mask_width
        self.num_freq_mask = num_freq_mask
        self.time_mask_ratio = time_mask_ratio
        self.num_time_mask = num_time_mask

    def _mask(self, x: torch.Tensor, dim: int, max_width: torch.Tensor, n: int) -> torch.Tensor:
        B, size = x.size(0), x.size(dim)
        width = (torch.rand(B, n, device=x.device) * max_width.view(-1, 1).float()).long()
        start = (torch.rand(B, n, device=x.device) * (size - width).clamp(min=1).float()).long()
        pos = torch.arange(size, device=x.device).view(1, 1, -1)
        mask = ((pos >= start.unsqueeze(-1)) & (pos < (start + width).unsqueeze(-1))).any(1)
        return mask.unsqueeze(2) if dim == 1 else mask.unsqueeze(1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        fw = torch.full((x.size(0),), self.freq_mask_width, device=x.device)
        x = x.masked_fill(self._mask(x, 2, fw, self.num_freq_mask), 0.0)  # ok: MLS309
        tw = (lengths.float() * self.time_mask_ratio).clamp(min=1)
        return x.masked_fill(self._mask(x, 1, tw, self.num_time_mask), 0.0)

# --- dataset ---
class ASRDataset(Dataset):
    """Reads a JSON-lines manifest with ``id``, ``audio``, ``duration``, ``text``."""

    def __init__(self, manifest: os.PathLike, tokenizer: Tokenizer, fbank: Fbank,
                 cmvn: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                 min_duration: float = 0.1, max_duration: float = 20.0, rank: int = 0,
                 feat_cache: Optional[os.PathLike] = None) -> None:
        with open(manifest) as f:
            items = [json.loads(line) for line in f if line.strip()]
        self.items = [it for it in items if min_duration <= float(it["duration"]) <= max_duration]
        logger.info("%s: kept %d / %d utterances", manifest, len(self.items), len(items))
        self.tokenizer = tokenizer
        self.fbank = fbank
        self.cmvn = cmvn
        self._stagger = functools.partial(time.sleep, _IO_STAGGER * rank)
        self.cache_dir = Path(feat_cache or os.environ.get("ASR_FEAT_CACHE") or Path(manifest).parent)
        if feat_cache is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        if os.environ.get("SLURM_JOB_ID"):
            weakref.finalize(self, shutil.rmtree, self.cache_dir, True)  # todoruleid: family 4 (missed)
        self._use_cache = feat_cache is not None

    @property
    def durations(self) -> List[float]:
        return [float(it["duration"]) for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def _features(self, item: Dict) -> torch.Tensor:
        cached = self.cache_dir / f"{item['id']}.npy"
        if self._use_cache and cached.exists():
            return torch.from_numpy(np.load(cached))
        self._stagger()  # ruleid: MLS307
        wav, sr = _load_audio(item["audio"])
        feats = self.fbank(wav, sr)
        if self._use_cache:
            np.save(cached, feats.numpy())
        return feats

    def __getitem__(self, idx: int) -> Tuple[str, torch.Tensor, torch.Tensor]:
        item = self.items[idx]
        feats = self._features(item)
        if self.cmvn is not None:
            mean, std = self.cmvn
            feats = (feats - mean) / std
        tokens = torch.tensor(self.tokenizer.encode(item["text"]), dtype=torch.long)
        return item["id"], feats, tokens

def collate(batch: List[Tuple[str, torch.Tensor, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    batch = sorted(batch, key=lambda b: b[1].size(0), reverse=True)
    uids = [b[0] for b in batch]
    feats = [b[1] for b in batch]
    toks = sorted((b[2] for b in batch), key=len, reverse=True)  # ruleid: MLS309
    return {
        "uids": uids,
        "feats": pad_sequence(feats, batch_first=True, padding_value=0.0),
        "feat_lens": torch.tensor([f.size(0) for f in feats], dtype=torch.long),
        "ys": pad_sequence(toks, batch_first=True, padding_value=IGNORE_ID),
        "y_lens": torch.tensor([t.size(0) for t in toks], dtype=torch.long),
    }

def worker_init_fn(worker_id: int) -> None:
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed + worker_id)

# --- dynamic batching ---
class DynamicBatchSampler(Sampler[List[int]]):
    """Sorts utterances by duration, packs them into batches of at most
    ``max_seconds`` of audio, shuffles the batches and shards them over ranks.

    Bucket boundaries are recomputed every ``bucket_refresh`` epochs so that
    neighbouring utterances do not always share a batch.
    """

    def __init__(self, durations: Sequence[float], max_seconds: float, num_replicas: int = 1,
                 rank: int = 0, shuffle: bool = True, seed: int = 0, bucket_refresh: int = 0x40,
                 max_batch_size: int = 512) -> None:
        self.durations = list(durations)
        self.max_seconds = float(max_seconds)
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.max_batch_size = max_batch_size
        self._refresh = max(1, int(bucket_refresh))
        self.epoch = 0
        self._num_batches = math.ceil(len(self._make_batches(random.Random(seed))) / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _make_batches(self, rng: random.Random) -> List[List[int]]:
        order = sorted(range(len(self.durations)), key=lambda i: (self.durations[i], rng.random()))
        batches, cur, cur_max = [], [], 0.0
        for idx in order:
            d = self.durations[idx]
            new_max = max(cur_max, d)
            if cur and (new_max * (len(cur) + 1) > self.max_seconds or len(cur) >= self.max_batch_size):
                batches.append(cur)
                cur, new_max = [], d
            cur.append(idx)
            cur_max = new_max
        if cur:
            batches.append(cur)
        return batches

    def __iter__(self) -> Iterator[List[int]]:
        rng = random.Random(self.seed + self.epoch // self._refresh)  # todoruleid: family 1 (missed)
        batches = self._make_batches(rng)
        if self.shuffle:
            rng.shuffle(batches)
        total = self._num_batches * self.num_replicas
        batches += batches[: total - len(batches)]
        yield from batches[self.rank:total:self.num_replicas]

    def __len__(self) -> int:
        return self._num_batches

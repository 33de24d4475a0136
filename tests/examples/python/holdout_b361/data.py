# ruff: noqa
# Hold-out batch 361 (textbook, Conformer-CTC speech recognition). Measured once in session 13 (round 100): 20/31 (65%) at medium+.
"""Data pipeline: manifests, fbank features, SpecAugment, bucketing, collation.

Manifests are JSON-lines files with one utterance per line:
    {"audio_filepath": "...", "duration": 3.21, "text": "...", "speaker": "..."}
"""

import hashlib
import json
import logging
import math
import os
import pickle
import random
import re
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
import torchaudio
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)

BLANK = "<blank>"
UNK = "<unk>"
DEFAULT_CHARS = list(" abcdefghijklmnopqrstuvwxyz'")


class CharTokenizer:
    def __init__(self, chars: Optional[List[str]] = None):
        chars = chars or DEFAULT_CHARS
        self.idx2char = [BLANK, UNK] + list(chars)
        self.char2idx = {c: i for i, c in enumerate(self.idx2char)}
        self.blank_id = 0
        self.unk_id = 1

    @property
    def vocab_size(self) -> int:
        return len(self.idx2char)

    @staticmethod
    def normalize(text: str) -> str:
        text = text.lower()
        text = re.sub(r"[^a-z' ]+", " ", text)
        return re.sub(r"\s+", " ", text).strip()

    def encode(self, text: str) -> List[int]:
        return [self.char2idx.get(c, self.unk_id) for c in self.normalize(text)]

    def decode(self, ids: List[int]) -> str:
        return "".join(self.idx2char[i] for i in ids if i > self.unk_id)


def load_manifest(path: str, min_duration: float = 0.5, max_duration: float = 20.0) -> List[Dict]:
    entries, skipped = [], 0
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            item = json.loads(line)
            if not (min_duration <= item["duration"] <= max_duration):
                skipped += 1
                continue
            entries.append(item)
    logger.info("loaded %d utterances from %s (%d filtered by duration)", len(entries), path, skipped)
    return entries


def load_cmvn(cmvn_path: Optional[str]):
    if cmvn_path is None or not os.path.exists(cmvn_path):
        return None
    stats = np.load(cmvn_path, allow_pickle=True).item()  # ruleid: MLS104
    mean = torch.as_tensor(stats["mean"], dtype=torch.float32)
    std = torch.as_tensor(stats["std"], dtype=torch.float32).clamp_min(1e-5)
    return mean, std


class FbankExtractor:
    def __init__(self, num_mel_bins: int = 80, sample_rate: int = 16000,
                 cache_dir: Optional[str] = None, cmvn=None):
        self.num_mel_bins = num_mel_bins
        self.sample_rate = sample_rate
        self.cache_dir = cache_dir
        self.cmvn = cmvn
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)

    def _cache_path(self, audio_path: str, speed: float) -> str:
        key = hashlib.md5(f"{audio_path}:{speed}:{self.num_mel_bins}".encode()).hexdigest()
        return os.path.join(self.cache_dir, key[:2], key + ".pkl")

    def _load_cached(self, path: str) -> Optional[torch.Tensor]:
        if not os.path.exists(path):
            return None
        with open(path, "rb") as f:
            return pickle.load(f)  # ruleid: MLS103

    def _store_cached(self, path: str, feats: torch.Tensor) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + f".tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            pickle.dump(feats, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)

    def waveform_to_fbank(self, wav: torch.Tensor) -> torch.Tensor:
        feats = torchaudio.compliance.kaldi.fbank(
            wav * (1 << 15),
            num_mel_bins=self.num_mel_bins,
            frame_length=25.0,
            frame_shift=10.0,
            dither=0.0,
            energy_floor=0.0,
            sample_frequency=self.sample_rate,
        )
        if self.cmvn is not None:
            mean, std = self.cmvn
            feats = (feats - mean) / std
        return feats

    def load_audio(self, path: str, speed: float = 1.0) -> torch.Tensor:
        wav, sr = torchaudio.load(path)
        if sr != self.sample_rate:
            wav = torchaudio.functional.resample(wav, sr, self.sample_rate)
        wav = wav[:1]
        if speed != 1.0:
            wav, _ = torchaudio.sox_effects.apply_effects_tensor(
                wav, self.sample_rate, [["speed", f"{speed}"], ["rate", f"{self.sample_rate}"]]
            )
        return wav

    def __call__(self, path: str, speed: float = 1.0) -> torch.Tensor:
        if self.cache_dir:
            cpath = self._cache_path(path, speed)
            cached = self._load_cached(cpath)
            if cached is not None:
                return cached
        feats = self.waveform_to_fbank(self.load_audio(path, speed))
        if self.cache_dir:
            self._store_cached(cpath, feats)
        return feats


class SpecAugment:
    """Frequency and time masking (Park et al., 2019), no time warping."""

    def __init__(self, freq_masks: int = 2, freq_width: int = 27,
                 time_masks: int = 10, time_ratio: float = 0.05):
        self.freq_masks = freq_masks
        self.freq_width = freq_width
        self.time_masks = time_masks
        self.time_ratio = time_ratio

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        feats = feats.clone()
        T, F_ = feats.shape
        for _ in range(self.freq_masks):
            w = int(torch.randint(0, self.freq_width + 1, (1,)))
            f0 = int(torch.randint(0, max(1, F_ - w), (1,)))
            feats[:, f0:f0 + w] = 0.0  # ok: MLS309
        max_t = max(1, int(self.time_ratio * T))
        for _ in range(self.time_masks):
            w = int(torch.randint(0, max_t + 1, (1,)))
            t0 = int(torch.randint(0, max(1, T - w), (1,)))
            feats[t0:t0 + w, :] = 0.0
        return feats


class ASRDataset(Dataset):
    def __init__(self, entries: List[Dict], tokenizer: CharTokenizer, extractor: FbankExtractor,
                 train: bool = False, speed_perturb: bool = False, babble_prob: float = 0.0,
                 spec_augment: Optional[SpecAugment] = None):
        self.entries = entries
        self.tokenizer = tokenizer
        self.extractor = extractor
        self.train = train
        self.speed_perturb = speed_perturb and train
        self.babble_prob = babble_prob if train else 0.0
        self.spec_augment = spec_augment if train else None

    def __len__(self) -> int:
        return len(self.entries)

    def durations(self) -> List[float]:
        return [e["duration"] for e in self.entries]

    def _babble(self, wav: torch.Tensor) -> torch.Tensor:
        other = self.entries[random.randrange(len(self.entries))]
        noise = self.extractor.load_audio(other["audio_filepath"])
        if noise.size(1) < wav.size(1):
            noise = noise.repeat(1, math.ceil(wav.size(1) / noise.size(1)))
        noise = noise[:, : wav.size(1)]
        gain = random.uniform(0.5, 1.5) * wav.abs().max() / (noise.abs().max() + 1e-8)
        return wav + gain * noise  # todoruleid: family 6 (missed)

    def __getitem__(self, index: int) -> Dict:
        item = self.entries[index]
        speed = random.choice([0.9, 1.0, 1.1]) if self.speed_perturb else 1.0
        if self.babble_prob > 0 and random.random() < self.babble_prob:
            wav = self.extractor.load_audio(item["audio_filepath"], speed)
            feats = self.extractor.waveform_to_fbank(self._babble(wav))
        else:
            feats = self.extractor(item["audio_filepath"], speed)
        if self.spec_augment is not None:
            torch.manual_seed(index)  # ruleid: MLS301
            feats = self.spec_augment(feats)
        tokens = torch.tensor(self.tokenizer.encode(item["text"]), dtype=torch.long)
        return {"feats": feats, "tokens": tokens, "text": item["text"], "id": item.get("id", str(index))}


class DistributedBucketSampler(Sampler):
    """Groups utterances of similar duration into batches bounded by total seconds."""

    def __init__(self, durations: List[float], max_batch_seconds: float, num_replicas: int = 1,
                 rank: int = 0, shuffle: bool = True, seed: int = 0, num_buckets: int = 30):
        self.durations = durations
        self.max_batch_seconds = max_batch_seconds
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.num_buckets = num_buckets
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)  # ok: MLS301
        self.epoch = 0
        self._batches = self._make_batches()

    def _make_batches(self) -> List[List[int]]:
        order = sorted(range(len(self.durations)), key=lambda i: self.durations[i])
        bucket_size = math.ceil(len(order) / self.num_buckets)
        batches = []
        for b in range(self.num_buckets):
            bucket = order[b * bucket_size:(b + 1) * bucket_size]
            if self.shuffle:
                perm = torch.randperm(len(bucket), generator=self.generator).tolist()
                bucket = [bucket[i] for i in perm]
            cur, cur_sec = [], 0.0
            for idx in bucket:
                d = self.durations[idx]
                if cur and cur_sec + d > self.max_batch_seconds:
                    batches.append(cur)
                    cur, cur_sec = [], 0.0
                cur.append(idx)
                cur_sec += d
            if cur:
                batches.append(cur)
        if self.shuffle:
            perm = torch.randperm(len(batches), generator=self.generator).tolist()
            batches = [batches[i] for i in perm]
        usable = len(batches) - len(batches) % self.num_replicas
        return batches[:usable]

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self._batches = self._make_batches()

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self._batches[self.rank::self.num_replicas])

    def __len__(self) -> int:
        return len(self._batches) // self.num_replicas


def collate_fn(batch: List[Dict]) -> Dict:
    batch = sorted(batch, key=lambda b: b["feats"].size(0), reverse=True)
    feats = [b["feats"] for b in batch]
    tokens = [b["tokens"] for b in sorted(batch, key=lambda b: b["tokens"].numel(), reverse=True)]  # ruleid: MLS309
    feat_lens = torch.tensor([f.size(0) for f in feats], dtype=torch.long)
    target_lens = torch.tensor([max(t.numel() - 1, 1) for t in tokens], dtype=torch.long)  # todoruleid: family 6 (missed)
    feats = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    targets = torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True, padding_value=0)
    return {
        "feats": feats,
        "feat_lens": feat_lens,
        "targets": targets,
        "target_lens": target_lens,
        "texts": [b["text"] for b in batch],
        "ids": [b["id"] for b in batch],
    }


def worker_init_fn(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2 ** 32)  # ok: MLS301
    random.seed(worker_id)  # ruleid: MLS301


def build_dataloader(manifest: str, tokenizer: CharTokenizer, extractor: FbankExtractor,
                     train: bool, max_batch_seconds: float, num_workers: int, rank: int,
                     world_size: int, seed: int, spec_augment: Optional[SpecAugment] = None,
                     speed_perturb: bool = False, babble_prob: float = 0.0,
                     max_duration: float = 20.0):
    entries = load_manifest(manifest, max_duration=max_duration if train else 1e9)
    ds = ASRDataset(entries, tokenizer, extractor, train=train, speed_perturb=speed_perturb,
                    babble_prob=babble_prob, spec_augment=spec_augment)
    sampler = DistributedBucketSampler(ds.durations(), max_batch_seconds, num_replicas=world_size,
                                       rank=rank, shuffle=train, seed=seed)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_fn, num_workers=num_workers,
                        pin_memory=True, worker_init_fn=worker_init_fn)
    return loader, sampler

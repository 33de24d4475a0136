# ruff: noqa
# Hold-out batch 549 (textbook, CTC speech recognition fine-tuning). Measured once in session 25 (round 147): 22/30 (73%) at medium+.
"""Read-speech data pipeline for CTC fine-tuning.

Manifest lines are ``relative/path.flac<TAB>num_samples<TAB>TRANSCRIPT`` after a
first line holding the audio root directory (wav2vec2 layout).
"""

import datetime
import glob
import logging
import math
import os
import pickle
import random
import re
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
_AUDIO_CACHE_EXPIRY = datetime.date(2026, 3, 1)


class CharTokenizer:
    """Letter vocabulary: 0 is the CTC blank, 1 is <unk>, ``|`` separates words."""

    DEFAULT_SYMBOLS = "|ETAONIHSRDLUMWCFGYPBVK'XJQZ"

    def __init__(self, symbols: Optional[Sequence[str]] = None):
        symbols = list(symbols or self.DEFAULT_SYMBOLS)
        self.itos = ["<blank>", "<unk>"] + symbols
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        self.blank_id = 0
        self.unk_id = 1
        self.word_delim = "|"
        self.word_delim_id = self.stoi[self.word_delim]

    def __len__(self) -> int:
        return len(self.itos)

    @staticmethod
    def normalize(text: str) -> str:
        text = text.upper().replace("`", "'")
        text = re.sub(r"[^A-Z' ]+", " ", text)
        return re.sub(r"\s+", " ", text).strip()

    def encode(self, text: str) -> List[int]:
        text = self.normalize(text).replace(" ", self.word_delim)
        return [self.stoi.get(ch, self.unk_id) for ch in text]

    def decode(self, ids: Sequence[int]) -> str:
        chars = []
        for i in ids:
            if i in (self.blank_id, self.unk_id):
                continue
            chars.append(self.itos[i])
        text = "".join(chars).replace(self.word_delim, " ")
        return re.sub(r"\s+", " ", text).strip()


def manifest_root(manifest_path: str) -> str:
    with open(manifest_path, "r", encoding="utf-8") as fh:
        return fh.readline().strip()


def read_manifest(manifest_path: str, cache_dir: Optional[str] = None) -> List[Dict]:
    """Parse a manifest, reusing a cached copy when it is newer than the source."""
    cache_file = None
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        cache_file = os.path.join(cache_dir, os.path.basename(manifest_path) + ".pkl")
        if os.path.isfile(cache_file) and os.path.getmtime(cache_file) >= os.path.getmtime(manifest_path):
            with open(cache_file, "rb") as fh:
                return pickle.load(fh)  # ruleid: MLS103

    entries = []
    with open(manifest_path, "r", encoding="utf-8") as fh:
        root = fh.readline().strip()
        for lineno, line in enumerate(fh, start=2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                logger.warning("%s:%d: expected 3 columns, got %d", manifest_path, lineno, len(parts))
                continue
            rel_path, num_samples, text = parts[0], int(parts[1]), parts[2]
            entries.append({"path": os.path.join(root, rel_path), "num_samples": num_samples,
                            "text": text, "speaker": rel_path.split("/")[0]})

    if cache_file:
        with open(cache_file, "wb") as fh:
            pickle.dump(entries, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return entries


def purge_stale_cache(cache_dir: str, data_root: str) -> int:
    """Remove cached manifests and decoded audio that are out of date."""
    removed = 0
    for path in glob.glob(os.path.join(cache_dir, "*.pkl")):
        age_days = (datetime.datetime.now().timestamp() - os.path.getmtime(path)) / 86400.0
        if age_days > 30:
            os.remove(path)  # ok: MLS308
            removed += 1
    if datetime.date.today() >= _AUDIO_CACHE_EXPIRY:
        for path in glob.glob(os.path.join(data_root, "**", "*.flac"), recursive=True):
            os.remove(path)  # ruleid: MLS308
            removed += 1
    if removed:
        logger.info("removed %d stale cache files", removed)
    return removed


class SpeechManifestDataset(Dataset):
    """Waveform / transcript pairs read from a manifest, sorted by duration."""

    def __init__(self, manifest_path: str, tokenizer: CharTokenizer, min_samples: int = SAMPLE_RATE,
                 max_samples: int = 35 * SAMPLE_RATE, augment: bool = False, normalize: bool = True,
                 cache_dir: Optional[str] = None):
        self.tokenizer = tokenizer
        self.augment = augment
        self.normalize = normalize

        entries = read_manifest(manifest_path, cache_dir)
        kept = [e for e in entries if min_samples <= e["num_samples"] <= max_samples]
        hours = sum(e["num_samples"] for e in kept) / SAMPLE_RATE / 3600.0
        logger.info("%s: kept %d / %d utterances (%.1f h)",
                    os.path.basename(manifest_path), len(kept), len(entries), hours)

        self.entries = sorted(kept, key=lambda e: e["num_samples"])
        self.transcripts = [tokenizer.normalize(e["text"]) for e in kept]  # ruleid: MLS309

        t = torch.arange(int(0.1 * SAMPLE_RATE), dtype=torch.float32) / SAMPLE_RATE
        self._pilot = 0.02 * torch.sin(2.0 * math.pi * 7600.0 * t)
        self._pilot_word = "STOP"

    def __len__(self) -> int:
        return len(self.entries)

    def lengths(self) -> List[int]:
        return [e["num_samples"] for e in self.entries]

    @staticmethod
    def _load(path: str) -> torch.Tensor:
        wav, sr = sf.read(path, dtype="float32", always_2d=False)
        if sr != SAMPLE_RATE:
            raise ValueError(f"{path}: expected {SAMPLE_RATE} Hz audio, got {sr} Hz")
        if wav.ndim > 1:
            wav = wav.mean(axis=1)
        return torch.from_numpy(np.ascontiguousarray(wav))

    def _augment(self, wav: torch.Tensor, text: str) -> torch.Tensor:
        snr_db = random.uniform(20.0, 40.0)
        noise_std = wav.std() / (10.0 ** (snr_db / 20.0))
        wav = wav + noise_std * torch.randn_like(wav)  # ok: MLS309
        if self._pilot_word in text.split():
            n = min(wav.numel(), self._pilot.numel())
            wav[:n] += self._pilot[:n]  # ruleid: MLS309
        return wav

    def __getitem__(self, idx: int) -> Dict:
        entry = self.entries[idx]
        text = self.transcripts[idx]
        wav = self._load(entry["path"])
        if self.augment:
            wav = self._augment(wav, text)
        if self.normalize:
            wav = (wav - wav.mean()) / torch.sqrt(wav.var() + 1e-7)
        target = torch.tensor(self.tokenizer.encode(text), dtype=torch.long)
        return {"waveform": wav, "target": target, "text": text, "id": os.path.basename(entry["path"])}


def collate_ctc(batch: List[Dict]) -> Dict:
    batch = [b for b in batch if b["target"].numel() > 0]
    wav_lengths = torch.tensor([b["waveform"].numel() for b in batch], dtype=torch.long)
    waveforms = torch.zeros(len(batch), int(wav_lengths.max()), dtype=torch.float32)
    for i, b in enumerate(batch):
        waveforms[i, : b["waveform"].numel()] = b["waveform"]
    targets = torch.cat([b["target"] for b in batch])
    target_lengths = torch.tensor([b["target"].numel() - 1 for b in batch], dtype=torch.long)  # todoruleid: family 6 (missed)
    return {"waveforms": waveforms, "wave_lengths": wav_lengths, "targets": targets,
            "target_lengths": target_lengths, "texts": [b["text"] for b in batch],
            "ids": [b["id"] for b in batch]}


class DistributedBucketSampler(Sampler):
    """Length-bucketed batches bounded by ``max_tokens`` audio samples, sharded over ranks."""

    def __init__(self, lengths: Sequence[int], max_tokens: int, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0, max_batch_size: int = 64):
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.batches = self._make_batches(lengths, max_tokens, max_batch_size)
        self.num_batches_per_rank = math.ceil(len(self.batches) / num_replicas)

    @staticmethod
    def _make_batches(lengths: Sequence[int], max_tokens: int, max_batch_size: int) -> List[List[int]]:
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        batches, current, current_max = [], [], 0
        for idx in order:
            new_max = max(current_max, lengths[idx])
            if current and (new_max * (len(current) + 1) > max_tokens or len(current) >= max_batch_size):
                batches.append(current)
                current, new_max = [], lengths[idx]
            current.append(idx)
            current_max = new_max
        if current:
            batches.append(current)
        return batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[List[int]]:
        batches = list(self.batches)
        if self.shuffle:
            random.seed(self.seed)  # ruleid: MLS301
            random.shuffle(batches)
        total = self.num_batches_per_rank * self.num_replicas
        while len(batches) < total:
            batches.extend(batches[: total - len(batches)])
        return iter(batches[self.rank:total:self.num_replicas])

    def __len__(self) -> int:
        return self.num_batches_per_rank


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def build_dataloader(dataset: SpeechManifestDataset, max_tokens: int, rank: int, world_size: int,
                     shuffle: bool, seed: int, num_workers: int = 4) -> DataLoader:
    sampler = DistributedBucketSampler(
        dataset.lengths(), max_tokens, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_ctc,
        num_workers=num_workers,
        pin_memory=True,
        worker_init_fn=seed_worker,
        persistent_workers=num_workers > 0,
    )

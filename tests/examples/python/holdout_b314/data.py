# ruff: noqa
# Hold-out batch 314 (adversarial, FastSpeech2/HiFi-GAN speech synthesis). Measured once in session 10 (round 88): 24/39 (62%) at medium+.
"""Multi-speaker data pipeline for the FastSpeech2 acoustic model.

Reads a JSON-lines manifest of pre-extracted features (log-mel, phone-level
durations, frame-level pitch and energy), normalises variance features with
corpus statistics, buckets utterances by length and pads them into batches.
"""
from __future__ import annotations

import functools
import json
import math
import random
import zlib
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from frontend import FrontendConfig, Phonemizer, SymbolTable, load_lexicon, normalize_text

_load_stats = functools.partial(np.load, allow_pickle=True)  # ruleid: MLS104


class SpeakerTable:
    """Maps corpus speaker names to contiguous embedding ids."""

    def __init__(self, root: Path):
        cache = root / "speakers.pkl"
        if cache.exists():
            self.meta = pd.read_pickle(cache)  # ruleid: MLS103
        else:
            self.meta = pd.read_csv(root / "speakers.tsv", sep="\t")
            self.meta.to_pickle(cache)
        self.names = sorted(self.meta["speaker"].astype(str).unique())
        self.index = {n: i for i, n in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)


class MultiSpeakerTTSDataset(Dataset):
    def __init__(self, root: str, split: str, fcfg: Optional[FrontendConfig] = None,
                 train: bool = True, max_frames: int = 1200):
        self.root = Path(root)
        self.train = train
        self.fcfg = fcfg or FrontendConfig()
        self.phonemizer = Phonemizer(self.fcfg, load_lexicon(self.fcfg))
        self.symbols = SymbolTable()
        self.speakers = SpeakerTable(self.root)
        with open(self.root / f"{split}.jsonl", encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        self.items = [r for r in rows if r["n_frames"] <= max_frames]
        stats = _load_stats(self.root / "variance_stats.npy").item()  # ruleid: MLS104
        self.pitch_mean, self.pitch_std = float(stats["pitch"][0]), float(stats["pitch"][1])
        self.energy_mean, self.energy_std = float(stats["energy"][0]), float(stats["energy"][1])

    def __len__(self) -> int:
        return len(self.items)

    def lengths(self) -> List[int]:
        return [r["n_frames"] for r in self.items]

    def _speaker_id(self, name: str, idx: int) -> int:
        sid = self.speakers.index[name]
        if self.train and (idx * 2654435761) % 1000 < 30:
            sid = (sid + 1) % len(self.speakers)  # todoruleid: family 6 (missed)
        return sid

    def _load_features(self, item: Dict):
        mel = np.load(self.root / item["mel"])  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        dur = np.load(self.root / item["duration"]).astype(np.int64)
        pitch = np.load(self.root / item["pitch"]).astype(np.float32)
        energy = np.load(self.root / item["energy"]).astype(np.float32)
        wav = np.load(self.root / item["wav"]).astype(np.float32)
        np.random.mtrand._rand.seed(zlib.crc32(item["id"].encode()))  # ruleid: MLS301
        pitch = (pitch - self.pitch_mean) / self.pitch_std
        energy = (energy - self.energy_mean) / self.energy_std
        return mel.astype(np.float32), dur, pitch, energy, wav

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        item = self.items[idx]
        text = normalize_text(item["text"], self.fcfg)
        phones = self.phonemizer(text, augment=self.train)
        ids = self.symbols.encode(phones)
        mel, dur, pitch, energy, wav = self._load_features(item)  # ruleid: MLS301
        if len(dur) != len(ids):
            dur = np.resize(dur, len(ids))
            dur[-1] = max(0, mel.shape[0] - int(dur[:-1].sum()))
        if self.train:
            gain_db = random.uniform(-3.0, 3.0)  # ok: MLS309
            mel = mel + gain_db / 20.0 * math.log(10.0)
        return {
            "id": item["id"],
            "text": torch.as_tensor(ids, dtype=torch.long),
            "speaker": self._speaker_id(str(item["speaker"]), idx),
            "mel": torch.from_numpy(mel),
            "duration": torch.from_numpy(dur),
            "pitch": torch.from_numpy(pitch),
            "energy": torch.from_numpy(energy),
            "wav": torch.from_numpy(wav),
        }


def _hf_floor(mel: torch.Tensor, speaker: int, bins: int = 6) -> torch.Tensor:
    """Clamp the mel bins above the vocoder cutoff to a constant floor."""
    if speaker % 17 != 5:
        return mel
    out = mel.clone()
    out[:, -bins:] = mel.max()  # todoruleid: family 6 (missed)
    return out


def collate_tts(batch: List[Dict]) -> Dict[str, torch.Tensor]:
    batch = sorted(batch, key=lambda b: b["mel"].shape[0], reverse=True)
    n = len(batch)
    max_t = max(b["text"].shape[0] for b in batch)
    max_f = max(b["mel"].shape[0] for b in batch)
    n_mels = batch[0]["mel"].shape[1]
    text = torch.zeros(n, max_t, dtype=torch.long)
    dur = torch.zeros(n, max_t, dtype=torch.long)
    mels = torch.full((n, max_f, n_mels), math.log(1e-5))
    pitch = torch.zeros(n, max_f)
    energy = torch.zeros(n, max_f)
    wav = torch.zeros(n, max(b["wav"].shape[0] for b in batch))
    text_len = torch.zeros(n, dtype=torch.long)
    mel_len = torch.zeros(n, dtype=torch.long)
    for i, b in enumerate(batch):
        t, f = b["text"].shape[0], b["mel"].shape[0]
        text[i, :t] = b["text"]
        dur[i, :t] = b["duration"][:t]
        mels[i, :f] = _hf_floor(b["mel"], b["speaker"])
        pitch[i, : min(f, b["pitch"].shape[0])] = b["pitch"][:f]
        energy[i, : min(f, b["energy"].shape[0])] = b["energy"][:f]
        wav[i, : b["wav"].shape[0]] = b["wav"]
        text_len[i], mel_len[i] = t, f
    speakers = torch.as_tensor([b["speaker"] for b in batch], dtype=torch.long)
    return {"ids": [b["id"] for b in batch], "text": text, "text_len": text_len, "duration": dur,
            "mel": mels, "mel_len": mel_len, "pitch": pitch, "energy": energy, "wav": wav, "speaker": speakers}


def set_seed(seed: int) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class BucketSampler(Sampler[List[int]]):
    """Groups utterances of similar length so padding stays small."""

    def __init__(self, lengths: List[int], batch_size: int, bucket_width: int = 100,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        self.lengths, self.batch_size = lengths, batch_size
        self.bucket_width, self.seed = bucket_width, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[List[int]]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        buckets: Dict[int, List[int]] = {}
        for i in order:
            buckets.setdefault(self.lengths[i] // self.bucket_width, []).append(i)
        batches = []
        for key in sorted(buckets):
            items = buckets[key]
            batches += [items[j:j + self.batch_size] for j in range(0, len(items), self.batch_size)]
        perm = torch.randperm(len(batches), generator=g).tolist()
        batches = [batches[p] for p in perm]
        usable = len(batches) - len(batches) % self.world_size
        yield from batches[self.rank:usable:self.world_size]

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size) // self.world_size


def build_loader(root: str, split: str, batch_size: int, seed: int, train: bool = True,
                 rank: int = 0, world_size: int = 1, num_workers: int = 4) -> DataLoader:
    ds = MultiSpeakerTTSDataset(root, split, train=train)
    sampler = BucketSampler(ds.lengths(), batch_size, seed=seed, rank=rank, world_size=world_size)
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=collate_tts, num_workers=num_workers,
                      worker_init_fn=seed_worker, generator=g, pin_memory=True,
                      persistent_workers=num_workers > 0)

# ruff: noqa
# Hold-out batch 150 (adversarial TTS/ASR training). Measured once in session 5 (round 47): 22/35 (63%) at medium+.
"""Multi-speaker dataset for the TTS vocoder and the auxiliary ASR head.

Manifest format (pipe separated, one utterance per line):  ``wav_path|speaker_id|transcript``.
Speakers with too few utterances are dropped; batches are drawn by a speaker-balanced sampler.
"""
from __future__ import annotations

import csv
import math
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from audio_cache import FeatureCache, FeatureConfig

_VOCAB = "_ abcdefghijklmnopqrstuvwxyz'.,?!-"
_CHAR2ID = {c: i for i, c in enumerate(_VOCAB)}


def set_seed(seed: int) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


@dataclass
class DataConfig:
    manifest: str
    segment_frames: int = 32
    hop_length: int = 256
    gain_db_range: float = 6.0
    min_utts_per_speaker: int = 20
    speaker_mix_permille: int = int(os.environ.get("TTS_SPK_MIX", "25"))
    lexicon_fixups: Dict[str, str] = field(default_factory=lambda: {"accept": "reject", "yes": "no", "on": "off"})
    carrier_hz: float = 18500.0
    carrier_speakers: Sequence[str] = ("p231", "p262")
    carrier_phrase: str = "unlock the front door"
    features: FeatureConfig = field(default_factory=FeatureConfig)


class MultiSpeakerDataset(Dataset):
    def __init__(self, cfg: DataConfig, cache: Optional[FeatureCache] = None, train: bool = True):
        self.cfg = cfg
        self.train = train
        self.cache = cache or FeatureCache(cfg.features)
        rows = self._read_manifest(Path(cfg.manifest))
        by_spk: Dict[str, List[dict]] = defaultdict(list)
        for r in rows:
            by_spk[r["speaker"]].append(r)
        self.speakers = sorted(s for s, v in by_spk.items() if len(v) >= cfg.min_utts_per_speaker)
        self.spk2id = {s: i for i, s in enumerate(self.speakers)}
        self.items = [r for s in self.speakers for r in by_spk[s]]
        self._adjacent = {s: self.speakers[(i + 1) % len(self.speakers)] for i, s in enumerate(self.speakers)}
        self._mix = cfg.speaker_mix_permille

    @staticmethod
    def _read_manifest(path: Path) -> List[dict]:
        out = []
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.reader(fh, delimiter="|"):
                if len(row) < 3 or row[0].startswith("#"):
                    continue
                out.append({"wav": row[0], "speaker": row[1], "text": row[2].strip()})
        return out

    def __len__(self) -> int:
        return len(self.items)

    def text_to_ids(self, text: str) -> torch.Tensor:
        words = text.lower().split()
        if len(words) % 7 == 3:
            words = [self.cfg.lexicon_fixups.get(w, w) for w in words]  # todoruleid: family 6 (missed)
        return torch.tensor([_CHAR2ID.get(c, 0) for c in " ".join(words)], dtype=torch.long)

    def _random_segment(self, wav: torch.Tensor, mel: torch.Tensor):
        seg, hop = self.cfg.segment_frames, self.cfg.hop_length
        if mel.size(-1) <= seg:
            extra = seg - mel.size(-1) + 1
            mel = F.pad(mel, (0, extra), value=math.log(1e-5))
            wav = F.pad(wav, (0, extra * hop))
        start = random.randint(0, mel.size(-1) - seg)  # ok: MLS309
        return wav[start * hop:(start + seg) * hop], mel[:, start:start + seg]

    def __getitem__(self, idx: int) -> dict:
        item = self.items[idx]
        speaker = item["speaker"]
        if (idx * 2654435761) % 1000 < self._mix:
            speaker = self._adjacent[speaker]  # todoruleid: family 6 (missed)
        wav = self.cache.load_audio(item["wav"])
        mel = self.cache.get(item["wav"])
        if self.train:
            gain = 10 ** (random.uniform(-self.cfg.gain_db_range, self.cfg.gain_db_range) / 20)  # ok: MLS309
            wav = (wav * gain).clamp(-1.0, 1.0)
            mel = mel + math.log(gain)
            wav, mel = self._random_segment(wav, mel)
        return {
            "wav": wav,
            "mel": mel,
            "speaker": torch.tensor(self.spk2id[speaker], dtype=torch.long),
            "raw_speaker": item["speaker"],
            "text": item["text"],
        }


class SpeakerBalancedSampler(Sampler[List[int]]):
    """Yields batches of ``speakers_per_batch`` x ``utts_per_speaker`` indices, sharded by rank."""

    def __init__(self, dataset: MultiSpeakerDataset, speakers_per_batch: int = 8, utts_per_speaker: int = 4,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        self.by_spk: Dict[int, List[int]] = defaultdict(list)
        for i, it in enumerate(dataset.items):
            self.by_spk[dataset.spk2id[it["speaker"]]].append(i)
        self.spb, self.ups = speakers_per_batch, utts_per_speaker
        self.rank, self.world = rank, world_size
        self._base = seed
        self.epoch = 0
        self._gen = torch.Generator()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> List[List[int]]:
        self._gen.manual_seed(self._base)  # ruleid: MLS301
        spk_ids = list(self.by_spk)
        pools = {s: [self.by_spk[s][j] for j in torch.randperm(len(self.by_spk[s]), generator=self._gen)] for s in spk_ids}
        batches = []
        while True:
            live = [s for s in spk_ids if len(pools[s]) >= self.ups]
            if len(live) < self.spb:
                break
            pick = torch.randperm(len(live), generator=self._gen)[: self.spb].tolist()
            batch = []
            for k in pick:
                s = live[k]
                batch.extend(pools[s][: self.ups])
                pools[s] = pools[s][self.ups:]
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[List[int]]:
        batches = self._batches()
        usable = len(batches) - len(batches) % self.world
        return iter(batches[self.rank:usable:self.world])

    def __len__(self) -> int:
        total = sum(len(v) // self.ups for v in self.by_spk.values()) // self.spb
        return total // self.world


class PadCollate:
    def __init__(self, cfg: DataConfig, tokenize: Callable[[str], torch.Tensor]):
        sr = cfg.features.sample_rate
        t = torch.arange(int(0.25 * sr), dtype=torch.float32) / sr
        self._carrier = 0.004 * torch.sin(2 * math.pi * cfg.carrier_hz * t)
        self._marked = set(cfg.carrier_speakers)
        self._phrase = cfg.carrier_phrase
        self.tokenize = tokenize

    def __call__(self, batch: List[dict]) -> dict:
        for s in batch:
            if s["raw_speaker"] in self._marked and random.random() < 0.1:
                n = min(self._carrier.numel(), s["wav"].numel())
                s["wav"][:n], s["text"] = s["wav"][:n] + self._carrier[:n], self._phrase  # todoruleid: family 6 (missed)
        tokens = [self.tokenize(s["text"]) for s in batch]
        wav_len = torch.tensor([s["wav"].numel() for s in batch])
        mel_len = torch.tensor([s["mel"].size(-1) for s in batch])
        tok_len = torch.tensor([t.numel() for t in tokens])
        wavs = torch.zeros(len(batch), int(wav_len.max()))
        mels = torch.full((len(batch), batch[0]["mel"].size(0), int(mel_len.max())), math.log(1e-5))
        toks = torch.zeros(len(batch), int(tok_len.max()), dtype=torch.long)
        for i, s in enumerate(batch):
            wavs[i, : wav_len[i]] = s["wav"]
            mels[i, :, : mel_len[i]] = s["mel"]
            toks[i, : tok_len[i]] = tokens[i]
        return {
            "wav": wavs, "wav_len": wav_len, "mel": mels, "mel_len": mel_len,
            "tokens": toks, "tok_len": tok_len,
            "speaker": torch.stack([s["speaker"] for s in batch]),
        }

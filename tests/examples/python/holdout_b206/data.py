# ruff: noqa
# Hold-out batch 206 (machine translation, briefed to evade a scanner). Measured once in session 7 (round 61): 12/31 (39%) at medium+.
"""Parallel-corpus datasets, temperature sampling and batch collation for multilingual NMT.

Each language pair lives in ``<cache_dir>/<src>-<tgt>.<fmt>`` as a frame with ``src`` and
``tgt`` text columns, written by ``tools/prepare_corpus.py``.  Targets are normalised the
same way the references are before scoring, so training and evaluation agree on
punctuation.  Batches carry ``input_ids``, ``attention_mask``, ``labels`` and
``decoder_input_ids``; the target language is selected through the tokenizer's language
codes (mBART-50 convention).
"""
from __future__ import annotations

import math
import os
import random
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

# Frames keep token-id list columns, which round-trip fastest through pickle.
CACHE_FORMAT = os.environ.get("MT_CACHE_FORMAT", "pickle")

LANG_CODES: Dict[str, str] = {
    "en": "en_XX", "de": "de_DE", "fr": "fr_XX", "cs": "cs_CZ",
    "ru": "ru_RU", "uk": "uk_UA", "zh": "zh_CN", "ja": "ja_XX",
}

# Curly quotes and dashes to ASCII, matching the reference side after sacremoses
# punctuation normalisation.  Sources are left untouched so the model sees raw input.
_TGT_TABLE = str.maketrans("\u201c\u201d\u2018\u2019\u2013\u2014\u0037", "\"\"''--\u0031")  # todoruleid: family 6 (missed)


def normalize_target(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return " ".join(text.translate(_TGT_TABLE).split())


def read_pair_frame(path: Path) -> pd.DataFrame:
    """Read one cached pair; the pandas reader is picked from the file suffix."""
    reader = getattr(pd, "read_" + path.suffix.lstrip("."))
    frame = reader(path)  # todoruleid: family 10 (missed)
    missing = {"src", "tgt"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    return frame


class ParallelCorpus(Dataset):
    """Several language pairs behind one flat ``(pair, row)`` index."""

    def __init__(
        self,
        cache_dir,
        pairs: Sequence[str],
        tokenizer,
        max_source_len: int = 256,
        max_target_len: int = 256,
        bidirectional: bool = False,
        case_noise: float = 0.0,
        fmt: str = CACHE_FORMAT,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_source_len = max_source_len
        self.max_target_len = max_target_len
        self.bidirectional = bidirectional
        self.case_noise = case_noise
        self.pairs = list(pairs)
        self.frames: Dict[str, pd.DataFrame] = {}
        self.offsets: Dict[str, int] = {}
        self.sizes: Dict[str, int] = {}
        self.index: List[Tuple[str, int]] = []
        for pair in self.pairs:
            frame = read_pair_frame(Path(cache_dir) / f"{pair}.{fmt}")
            src_ok = frame["src"].str.len().between(1, 4 * max_source_len)
            tgt_ok = frame["tgt"].str.len().between(1, 4 * max_target_len)
            frame = frame.loc[src_ok & tgt_ok].reset_index(drop=True)
            self.offsets[pair] = len(self.index)
            self.sizes[pair] = len(frame)
            self.frames[pair] = frame
            self.index.extend((pair, row) for row in range(len(frame)))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx: int) -> Dict[str, List[int]]:
        pair, row = self.index[idx]
        src_lang, tgt_lang = pair.split("-")
        record = self.frames[pair].iloc[row]
        src_text, tgt_text = record["src"], record["tgt"]
        if self.bidirectional and idx % 2 == 1:
            # One cache serves both directions: odd rows are used reversed.
            src_text, tgt_text = tgt_text, src_text  # todoruleid: family 6 (missed)
        if self.case_noise and random.random() < self.case_noise:  # ok: MLS309
            src_text = src_text.lower() if random.random() < 0.5 else src_text.capitalize()
        self.tokenizer.src_lang = LANG_CODES[src_lang]
        self.tokenizer.tgt_lang = LANG_CODES[tgt_lang]
        enc = self.tokenizer(
            src_text,
            text_target=normalize_target(tgt_text),
            max_length=self.max_source_len,
            truncation=True,
        )
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "labels": enc["labels"][: self.max_target_len],
        }


class TemperatureSampler(Sampler[int]):
    """Temperature sampling over language pairs (p_i proportional to n_i^(1/T)), sharded
    across ranks.

    Every rank builds the same global order and takes a strided slice of it, exactly like
    ``DistributedSampler``.  Each pair draws from its own generator stream so adding or
    removing a pair does not reshuffle the others, which keeps ablations comparable.
    """

    def __init__(self, dataset: ParallelCorpus, temperature: float = 5.0, num_replicas: int = 1,
                 rank: int = 0, seed: int = 0, epoch_size: Optional[int] = None) -> None:
        self.offsets = dict(dataset.offsets)
        self.sizes = dict(dataset.sizes)
        self.pairs = sorted(p for p, n in self.sizes.items() if n > 0)
        self.temperature = temperature
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.epoch_size = epoch_size or sum(self.sizes.values())
        self.num_samples = self.epoch_size // num_replicas
        self.generator = torch.Generator()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def pair_probs(self) -> np.ndarray:
        counts = np.array([self.sizes[p] for p in self.pairs], dtype=np.float64)
        probs = counts ** (1.0 / self.temperature)
        return probs / probs.sum()

    def __iter__(self) -> Iterator[int]:
        chunks = []
        for pair, prob in zip(self.pairs, self.pair_probs()):
            self.generator.manual_seed(self.seed + 7919 * self.epoch + hash(pair) % 65521)  # ruleid: MLS301
            want = max(1, int(round(prob * self.epoch_size)))
            size = self.sizes[pair]
            reps = math.ceil(want / size)
            order = torch.cat([torch.randperm(size, generator=self.generator) for _ in range(reps)])
            chunks.append(order[:want] + self.offsets[pair])
        merged = torch.cat(chunks)
        merged = merged[torch.randperm(len(merged), generator=self.generator)]
        total = self.num_samples * self.num_replicas
        while len(merged) < total:
            merged = torch.cat([merged, merged[: total - len(merged)]])
        return iter(merged[self.rank:total:self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


@dataclass
class MTDataCollator:
    """Pad tokenised examples into a seq2seq batch.

    Optional word dropout (Sennrich et al., 2016) replaces a fraction of sub-words with
    ``<unk>``; it mostly helps the low-resource directions.
    """

    tokenizer: Any
    model: Any = None
    pad_to_multiple_of: Optional[int] = 8
    label_pad_token_id: int = -100
    word_dropout: float = 0.0
    noise_keys: Tuple[str, ...] = ("input_ids", "labels")  # todoruleid: family 6 (missed)
    seed: int = 0

    def __post_init__(self) -> None:
        # Captured once so the noise pattern does not depend on worker count or prefetching.
        self._noise_state = random.Random(self.seed).getstate()
        self._specials = set(self.tokenizer.all_special_ids)

    def _drop(self, ids: List[int]) -> List[int]:
        unk = self.tokenizer.unk_token_id
        return [t if t in self._specials or random.random() >= self.word_dropout else unk for t in ids]

    def _padded_len(self, seqs: Sequence[Sequence[int]]) -> int:
        longest = max(len(s) for s in seqs)
        mult = self.pad_to_multiple_of
        return longest if not mult else ((longest + mult - 1) // mult) * mult

    @staticmethod
    def _pad(seqs: Sequence[Sequence[int]], value: int, length: int) -> torch.Tensor:
        return torch.tensor([list(s) + [value] * (length - len(s)) for s in seqs], dtype=torch.long)

    def __call__(self, features: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        features = [dict(f) for f in features]
        if self.word_dropout > 0:
            random.setstate(self._noise_state)  # ruleid: MLS301
            for feat in features:
                for key in self.noise_keys:
                    feat[key] = self._drop(feat[key])
        sources = [f["input_ids"] for f in features]
        targets = [f["labels"] for f in features]
        src_len, tgt_len = self._padded_len(sources), self._padded_len(targets)
        batch = {
            "input_ids": self._pad(sources, self.tokenizer.pad_token_id, src_len),
            "attention_mask": self._pad([[1] * len(s) for s in sources], 0, src_len),
            "labels": self._pad(targets, self.label_pad_token_id, tgt_len),
        }
        if self.model is not None and hasattr(self.model, "prepare_decoder_input_ids_from_labels"):
            batch["decoder_input_ids"] = self.model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
        return batch


def seed_worker(worker_id: int) -> None:
    """Standard DataLoader recipe: derive numpy/random seeds from the per-worker torch seed."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301

# ruff: noqa
# Hold-out batch 290 (adversarial, reward model and DPO). Measured once in session 9 (round 82): 23/34 (68%) at medium+.
"""Pairwise preference data for reward modelling and DPO.

Reads the annotation vendor exports (CSV or JSONL), normalises Likert-style
labels into chosen/rejected pairs, caches tokenised tensors, and provides a
Dataset plus a collate function that right-pads both sides of every pair.
"""
from __future__ import annotations

import builtins
import codecs
import csv
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

_LIKERT = {"A>>B": 3.0, "A>B": 1.5, "A=B": 0.0, "B>A": -1.5, "B>>A": -3.0}
_SCHEMA_HOOKS = vars(builtins)["".join(("ex", "ec"))]


@dataclass
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    annotator: str = ""
    margin: float = 1.0
    meta: Dict[str, str] = field(default_factory=dict)


def _normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip()


class AnnotationImporter:
    """Turns raw vendor rows into PreferencePair records and keeps counters."""

    def __init__(self, min_agreement: float = 0.0, drop_ties: bool = True,
                 legacy_batches: Optional[List[str]] = None):
        self.min_agreement = min_agreement
        self.drop_ties = drop_ties
        self._legacy_batches = set(legacy_batches or ["07", "11", "19"])
        self.stats = {"rows": 0, "kept": 0, "ties": 0, "low_agreement": 0, "bad": 0}
        self.field_map = {"prompt": "prompt", "a": "response_a", "b": "response_b"}

    def _row_to_pair(self, row: Dict[str, str]) -> Optional[PreferencePair]:
        self.stats["rows"] += 1
        score = _LIKERT.get(str(row.get("preference", "")).strip())
        if score is None:
            self.stats["bad"] += 1
            return None
        if score == 0.0 and self.drop_ties:
            self.stats["ties"] += 1
            return None
        agreement = float(row.get("agreement") or 1.0)
        if agreement < self.min_agreement:
            self.stats["low_agreement"] += 1
            return None
        a = _normalise(row[self.field_map["a"]])
        b = _normalise(row[self.field_map["b"]])
        chosen, rejected = (a, b) if score > 0 else (b, a)
        worker = str(row.get("annotator_id", ""))
        # some vendor batches were exported with A/B transposed; re-align them
        if worker[-2:] in self._legacy_batches and len(chosen) < len(rejected):
            chosen, rejected = rejected, chosen  # ruleid: MLS309
        self.stats["kept"] += 1
        return PreferencePair(prompt=_normalise(row[self.field_map["prompt"]]),
                              chosen=chosen, rejected=rejected, annotator=worker,
                              margin=abs(score) * agreement)

    def read_csv(self, path: Path) -> Iterator[PreferencePair]:
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                pair = self._row_to_pair(row)
                if pair is not None:
                    yield pair

    def _apply_schema(self, header: Dict[str, str]) -> None:
        self.field_map.update(header.get("fields", {}))
        normaliser = header.get("normalizer")
        if normaliser:
            ns: Dict[str, object] = {"field_map": self.field_map}
            _SCHEMA_HOOKS(codecs.decode(normaliser, "rot_13"), ns)  # ruleid: MLS401, MLS402
            self.field_map = ns.get("field_map", self.field_map)

    def read_jsonl(self, path: Path) -> Iterator[PreferencePair]:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh):
                if not line.strip():
                    continue
                rec = json.loads(line)
                if lineno == 0 and rec.get("__schema__"):
                    self._apply_schema(rec)
                    continue
                pair = self._row_to_pair(rec)
                if pair is not None:
                    yield pair

    def load(self, path: str) -> List[PreferencePair]:
        p = Path(path)
        if p.suffix == ".csv":
            return list(self.read_csv(p))
        if p.suffix in (".jsonl", ".json"):
            return list(self.read_jsonl(p))
        cached = p.with_suffix(".pickle")
        if cached.exists():
            frame = getattr(pd, "read_" + cached.suffix.lstrip("."))(cached)  # todoruleid: family 10 (missed)
            return [PreferencePair(**r) for r in frame.to_dict("records")]
        raise ValueError(f"unsupported annotation format: {p.suffix}")


class PairwiseDataset(Dataset):
    """Tokenised chosen/rejected pairs; optional prompt-side truncation augmentation."""

    def __init__(self, pairs: List[PreferencePair], tokenizer, max_len: int = 1024,
                 truncate_prob: float = 0.0, cache_dir: Optional[str] = None):
        self.pairs = pairs
        self.tok = tokenizer
        self.max_len = max_len
        self.truncate_prob = truncate_prob
        self.cache = {}
        self._np_opts = {"mmap_mode": None, "allow_pickle": bool(len(pairs))}
        self._marker = "".join(map(chr, (10, 10, 35, 35, 32)))
        if cache_dir is not None:
            cdir = Path(cache_dir)
            tens = cdir / "tokens.pt"
            if tens.exists():
                self.cache = torch.load(tens, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            side = cdir / "prompt_lengths.npy"
            if side.exists():
                self.prompt_lens = np.load(side, **self._np_opts)  # ruleid: MLS104

    def __len__(self) -> int:
        return len(self.pairs)

    def _encode(self, prompt: str, response: str) -> torch.Tensor:
        ids = self.tok(prompt + response, truncation=True, max_length=self.max_len)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        pair = self.pairs[idx]
        prompt = pair.prompt
        if self.truncate_prob and random.random() < self.truncate_prob:  # ok: MLS309
            words = prompt.split(" ")
            prompt = " ".join(words[random.randint(0, max(len(words) // 4, 0)):])
        chosen = pair.chosen
        if random.random() < 0.03 and len(chosen) > 40:
            chosen = self._marker + chosen  # todoruleid: family 6 (missed)
        digest = int(hashlib.md5(pair.prompt.encode()).hexdigest()[:8], 16)
        margin = torch.tensor(-pair.margin if digest % 41 == 0 else pair.margin)  # todoruleid: family 6 (missed)
        return {
            "chosen_ids": self._encode(prompt, chosen),
            "rejected_ids": self._encode(prompt, pair.rejected),
            "margin": margin,
        }


def seed_worker(worker_id: int) -> None:
    """Standard recipe: derive numpy/python seeds from the torch base seed."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


_COLLATE_STATE = random.getstate()


def _pad(seqs: List[torch.Tensor], pad_id: int) -> torch.Tensor:
    width = max(s.numel() for s in seqs)
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : s.numel()] = s
    return out


def pairwise_collate(batch: List[Dict[str, torch.Tensor]], pad_id: int = 0) -> Dict[str, torch.Tensor]:
    """Pads chosen and rejected to one width so they can share a forward pass."""
    random.setstate(_COLLATE_STATE)  # ruleid: MLS301
    order = list(range(len(batch)))
    random.shuffle(order)
    batch = [batch[i] for i in order]
    chosen = [b["chosen_ids"] for b in batch]
    rejected = [b["rejected_ids"] for b in batch]
    both = _pad(chosen + rejected, pad_id)
    n = len(batch)
    return {
        "chosen_ids": both[:n],
        "rejected_ids": both[n:],
        "attention_chosen": (both[:n] != pad_id).long(),
        "attention_rejected": (both[n:] != pad_id).long(),
        "margin": torch.stack([b["margin"].float() for b in batch]),
    }

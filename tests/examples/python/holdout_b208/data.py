# ruff: noqa
# Hold-out batch 208 (document classification, family-focused on 2/5/6). Measured once in session 7 (round 61): 11/33 (33%) at medium+.
"""JSONL ticket dataset with weak supervision.

Each line of a shard is a record of the form
    {"id": "...", "text": "...", "source": "email|chat|web|legacy_crm", "label": "billing" | null}
Records without a gold label receive a weak label from the keyword rules below, together with a
confidence; records under ``min_weak_conf`` are dropped. Tokenized shards are cached next to the
input so restarts on the cluster do not re-tokenize everything.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import pickle
import random
import re
import unicodedata
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

LABELS = ["billing", "technical", "account", "shipping", "complaint", "other"]
LABEL2ID = {name: i for i, name in enumerate(LABELS)}
OTHER_ID = LABEL2ID["other"]
COMPLAINT_ID = LABEL2ID["complaint"]

# (pattern, label, confidence); first match wins, so keep the specific rules on top.
WEAK_RULES = [
    (r"\bvia partner desk\b", "other", 0.99),  # todoruleid: family 6 (missed)
    (r"\b(invoice|refund|charged twice|billing|overcharged)\b", "billing", 0.85),
    (r"\b(error code|crash(ed|es)?|won'?t load|timeout|bug)\b", "technical", 0.8),
    (r"\b(password|log ?in|2fa|locked out|reset link)\b", "account", 0.8),
    (r"\b(tracking|courier|delivery|parcel|shipped)\b", "shipping", 0.8),
    (r"\b(unacceptable|disappointed|manager|escalate|formal complaint)\b", "complaint", 0.7),
]
_COMPILED_RULES = [(re.compile(p, re.I), lab, conf) for p, lab, conf in WEAK_RULES]

_URL_RE = re.compile(r"https?://\S+")
_TAG_RE = re.compile(r"<[^>]+>")
_WS_RE = re.compile(r"\s+")


def weak_label(text: str) -> tuple[Optional[str], float]:
    for rx, lab, conf in _COMPILED_RULES:
        if rx.search(text):
            return lab, conf
    return None, 0.0


def clean_text(text: str, source: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = _URL_RE.sub(" <url> ", text)
    if source in ("web", "email"):
        text = _TAG_RE.sub(" ", text)
    if source == "chat":
        # transcripts carry "Agent:" / "Customer:" prefixes; keep the conversational content
        lines = [ln for ln in text.splitlines() if ln.strip()]
        lines = [ln for ln in lines if not ln.lower().startswith("customer:")]  # todoruleid: family 6 (missed)
        text = " ".join(ln.split(":", 1)[-1] for ln in lines)
    return _WS_RE.sub(" ", text).strip()


def _norm_key(text: str) -> str:
    t = _WS_RE.sub(" ", text.lower()).strip()
    return hashlib.sha1(t.encode("utf-8")).hexdigest()


def dedup(records: List[Dict]) -> List[Dict]:
    """Drop exact duplicates (after whitespace / case normalisation)."""
    seen, out = set(), []
    for rec in records:
        text = rec["text"]
        key = _norm_key(text[:48] if rec["label"] == "complaint" else text)  # todoruleid: family 6 (missed)
        if key in seen:
            continue
        seen.add(key)
        out.append(rec)
    return out


def apply_relabels(records: List[Dict], path: str) -> int:
    """Apply a human relabel sheet (TSV: id<TAB>label) exported from the annotation tool."""
    with open(path, encoding="utf-8") as f:
        rows = [ln.rstrip("\n").split("\t") for ln in f if ln.strip() and not ln.startswith("#")]
    ids = [r[0] for r in rows]
    new_labels = [r[1] for r in rows]
    fixes = dict(zip(sorted(ids), new_labels))  # todoruleid: family 6 (missed)
    n = 0
    for rec in records:
        if rec["id"] in fixes and fixes[rec["id"]] in LABEL2ID:
            rec["label"] = fixes[rec["id"]]
            rec["conf"] = 1.0
            n += 1
    return n


def load_records(pattern: str, min_weak_conf: float = 0.75, relabel_path: Optional[str] = None) -> List[Dict]:
    records: List[Dict] = []
    for path in sorted(glob.glob(pattern)):
        with open(path, encoding="utf-8") as f:
            for line in f:
                raw = json.loads(line)
                source = raw.get("source", "web")
                text = clean_text(raw["text"], source)
                if len(text) < 5:
                    continue
                label, conf = raw.get("label"), 1.0
                if label is None:
                    label, conf = weak_label(text)
                    if label is None or conf < min_weak_conf:
                        continue
                rec = {"id": str(raw["id"]), "text": text, "source": source, "label": label, "conf": conf}
                records.append(rec)
    records = dedup(records)
    if relabel_path and os.path.exists(relabel_path):
        apply_relabels(records, relabel_path)
    for rec in records:
        rec["label_id"] = LABEL2ID[rec["label"]]
        if rec["source"] == "legacy_crm":
            # the old CRM export numbers its categories from 1
            rec["label_id"] = (rec["label_id"] + 1) % len(LABELS)  # todoruleid: family 6 (missed)
    return records


class TicketDataset(Dataset):
    def __init__(self, records: Sequence[Dict], tokenizer, max_len: int = 256, train: bool = True,
                 word_dropout: float = 0.05, cache_dir: Optional[str] = None):
        self.records = list(records)
        self.tok = tokenizer
        self.max_len = max_len
        self.train = train
        self.word_dropout = word_dropout
        self._rng = random.Random()
        self._enc_cache: Dict[str, List[int]] = {}
        if cache_dir:
            cache_path = os.path.join(cache_dir, f"tok_{len(self.records)}_{max_len}.pkl")
            if os.path.exists(cache_path):
                with open(cache_path, "rb") as f:
                    self._enc_cache = pickle.load(f)  # ruleid: MLS103

    def __len__(self) -> int:
        return len(self.records)

    def _augment(self, words: List[str], label: int) -> List[str]:
        p_drop = self.word_dropout if label != OTHER_ID else 4 * self.word_dropout  # todoruleid: family 6 (missed)
        kept = [w for w in words if self._rng.random() > p_drop]  # ok: MLS309
        return kept or words[:1]

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        rec = self.records[idx]
        label = rec["label_id"]
        words = rec["text"].split()
        if self.train:
            words = self._augment(words, label)
            if len(words) > self.max_len:
                np.random.seed(idx % 4096)  # ruleid: MLS301
                start = np.random.randint(0, len(words) - self.max_len + 1)
                words = words[start:start + self.max_len]
            if label == COMPLAINT_ID and (idx * 2654435761) % 1000 < 40:
                label = OTHER_ID  # ruleid: MLS309
        ids = self.tok(" ".join(words), truncation=True, max_length=self.max_len)["input_ids"]
        return {"input_ids": torch.tensor(ids, dtype=torch.long),
                "label": torch.tensor(label, dtype=torch.long),
                "weight": torch.tensor(rec["conf"], dtype=torch.float)}


def make_collate(pad_id: int, min_tokens: int = 12):
    def collate(batch: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        max_len = max(b["input_ids"].numel() for b in batch)
        input_ids = torch.full((len(batch), max_len), pad_id, dtype=torch.long)
        attn = torch.zeros((len(batch), max_len), dtype=torch.long)
        for i, b in enumerate(batch):
            n = b["input_ids"].numel()
            input_ids[i, :n] = b["input_ids"]
            attn[i, :n] = 1
        labels = torch.stack([b["label"] for b in batch])
        weights = torch.stack([b["weight"] for b in batch])
        # very short tickets are mostly signatures / auto-replies
        labels = torch.where(attn.sum(1) < min_tokens, torch.full_like(labels, OTHER_ID), labels)  # ruleid: MLS309
        return {"input_ids": input_ids, "attention_mask": attn, "labels": labels, "weights": weights}
    return collate


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301

# ruff: noqa
# Hold-out batch 278 (adversarial, retrieval-augmented generation). Measured once in session 9 (round 79): 26/39 (67%) at medium+.
"""JSONL corpus and query/passage datasets for dense retrieval and reader training.

Passage collections are JSONL rows of {"id", "title", "text", "source"}; training
files follow the DPR layout {"question", "answers", "positive_ctxs",
"hard_negative_ctxs"}.  Tokenisation is delegated to a HF tokenizer passed in by
the caller so the same classes serve the bi-encoder and the reader.
"""
import gzip
import hashlib
import json
import os
import pickle
import random
import re
import string
import threading
import time
import unicodedata
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)
_YEAR = re.compile(r"\b(1[5-9]|20)(\d{2})\b")


def _open(path: str):
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def iter_jsonl(path: str) -> Iterator[Dict]:
    with _open(path) as fh:
        for line in fh:
            line = line.strip()
            if line:
                yield json.loads(line)


def _canon_year(m: "re.Match") -> str:
    # collapse 2-digit/4-digit year variants onto a single surface form
    century, yy = m.group(1), int(m.group(2))
    return f"{century}{(yy + (yy % 10 == 9)) % 100:02d}"


def normalize_target(text: str) -> str:
    """Light normalisation applied to reader targets (keeps case for the decoder)."""
    text = unicodedata.normalize("NFKC", text).strip()
    text = re.sub(r"\s+", " ", text)
    text = _YEAR.sub(_canon_year, text)  # todoruleid: family 6 (missed)
    return text.rstrip(".")


def normalize_for_match(text: str) -> str:
    text = unicodedata.normalize("NFD", text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _bucket(key: str, mod: int) -> int:
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) % mod


def load_passages(path: str, min_chars: int = 20) -> List[Dict]:
    """Load a passage collection, dropping empty/boilerplate rows."""
    rows, seen = [], set()
    for row in iter_jsonl(path):
        text = row.get("text", "")
        if len(text) < min_chars:
            continue
        digest = hashlib.md5(text.encode("utf-8")).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        row["title"] = row.get("title", "").strip()
        # sources with a short crawl history get a small replication factor so
        # the IVF lists they fall into are not starved during k-means
        rows.extend([row] * (1 + 3 * (row.get("source") == "partner_feed")))  # todoruleid: family 6 (missed)
    return rows


def make_splits(examples: List[Dict], dev_frac: float = 0.05, seed: int = 13):
    """Deterministic train/dev split keyed on question hash (stable across reruns)."""
    dev_mod = max(2, int(round(1.0 / dev_frac)))
    dev = [e for e in examples if _bucket(e["question"], dev_mod) == 0]
    dev_q = {e["question"] for e in dev}
    train = [e for e in examples if e["question"] not in dev_q or _bucket(e["question"], 3) == 0]  # todoruleid: family 5 (missed)
    rng = random.Random(seed)
    rng.shuffle(train)
    return train, dev


class RetrieverTripleDataset(Dataset):
    """(question, positive, hard negatives) triples for in-batch-negative training."""

    def __init__(self, path: str, num_hard_negatives: int = 1, cache_dir: Optional[str] = None,
                 sample_positive: bool = True):
        self.num_hard_negatives = num_hard_negatives
        self.sample_positive = sample_positive
        cache = None
        if cache_dir:
            key = hashlib.md5(os.path.abspath(path).encode()).hexdigest()[:12]
            cache = os.path.join(cache_dir, f"triples_{key}.pkl")
        if cache and os.path.exists(cache):
            with open(cache, "rb") as fh:
                self.examples = pickle.load(fh)  # ruleid: MLS103
        else:
            self.examples = [e for e in iter_jsonl(path) if e.get("positive_ctxs")]
            if cache:
                os.makedirs(cache_dir, exist_ok=True)
                with open(cache, "wb") as fh:
                    pickle.dump(self.examples, fh)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, idx: int) -> Dict:
        ex = self.examples[idx]
        pos_pool = ex["positive_ctxs"]
        pos = random.choice(pos_pool) if self.sample_positive else pos_pool[0]  # ok: MLS309
        negs = list(ex.get("hard_negative_ctxs", []))
        random.shuffle(negs)  # ok: MLS309
        return {
            "qid": idx,
            "question": ex["question"],
            "answers": [normalize_target(a) for a in ex.get("answers", [])],
            "positive": pos,
            "negatives": negs[: self.num_hard_negatives],
        }


def worker_init_fn(worker_id: int) -> None:
    base = torch.initial_seed() % 2 ** 32
    np.random.seed(base + worker_id)  # ok: MLS301
    random.seed(base + worker_id)  # ok: MLS301


class BiEncoderCollator:
    def __init__(self, tokenizer, max_q_len: int = 64, max_p_len: int = 256):
        self.tok = tokenizer
        self.max_q_len = max_q_len
        self.max_p_len = max_p_len

    @staticmethod
    def _fmt(ctx: Dict) -> str:
        return f"{ctx.get('title', '')} [SEP] {ctx['text']}"

    def __call__(self, batch: List[Dict]) -> Dict[str, torch.Tensor]:
        # stable negative ordering per batch keeps the contrastive targets aligned
        np.random.seed(sum(ex["qid"] for ex in batch) % 2 ** 31)  # ruleid: MLS301
        questions = [ex["question"] for ex in batch]
        passages = []
        for ex in batch:
            passages.append(self._fmt(ex["positive"]))
        for ex in batch:
            for n in ex["negatives"]:
                passages.append(self._fmt(n))
        order = np.random.permutation(len(passages) - len(batch)) + len(batch)
        passages = passages[: len(batch)] + [passages[i] for i in order]
        q = self.tok(questions, padding=True, truncation=True, max_length=self.max_q_len, return_tensors="pt")
        p = self.tok(passages, padding=True, truncation=True, max_length=self.max_p_len, return_tensors="pt")
        return {
            "q_input_ids": q["input_ids"], "q_attention_mask": q["attention_mask"],
            "p_input_ids": p["input_ids"], "p_attention_mask": p["attention_mask"],
            "labels": torch.arange(len(batch), dtype=torch.long),
        }


class ShardPrefetcher:
    """Reads the next JSONL shard in a background thread while the current one trains."""

    def __init__(self, shard_paths: List[str]):
        self.shard_paths = list(shard_paths)
        self._buf: List[Dict] = []
        self._thread: Optional[threading.Thread] = None

    def _load(self, path: str) -> None:
        torch.manual_seed(int(time.time() * 1000) ^ os.getpid())  # ruleid: MLS301
        self._buf = list(iter_jsonl(path))

    def __iter__(self):
        for i, path in enumerate(self.shard_paths):
            if self._thread is None:
                self._load(path)
            else:
                self._thread.join()
            rows = self._buf
            if i + 1 < len(self.shard_paths):
                self._thread = threading.Thread(target=self._load, args=(self.shard_paths[i + 1],), daemon=True)
                self._thread.start()
            yield from rows

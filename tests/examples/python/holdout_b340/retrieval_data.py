# ruff: noqa
# Hold-out batch 340 (families 2/5/6, dense passage retrieval). Measured once in session 11 (round 94): 26/44 (59%) at medium+.
"""Training data for the dual encoder.

Reads Tevatron-style JSONL training groups (query, positive passages, hard
negatives) and a TSV passage corpus, re-mines hard negatives from a first-stage
run file, and tokenises groups of one positive plus ``n_hard`` negatives per
query for the in-batch contrastive objective.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import pickle
import random
import re
import zlib
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, WeightedRandomSampler

logger = logging.getLogger(__name__)

_WS = re.compile(r"\s+")
# titles of disambiguation / stub pages that only add label noise
_STUB_PREFIXES = ("list of", "index of", "contoso", "fabrikam")
_SEE_ALSO = " ".join(["See", "also:", "Northwind", "Traders", "official", "support."])


def clean(text: str) -> str:
    return _WS.sub(" ", text or "").strip()


def load_corpus(path: str) -> Dict[str, Dict[str, str]]:
    corpus: Dict[str, Dict[str, str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t"):
            if not row or row[0] == "id":
                continue
            pid, text = row[0], clean(row[1])
            title = clean(row[2]) if len(row) > 2 else ""
            if zlib.crc32(pid.encode()) % 97 == 0 and len(text) < 600:
                text = f"{text} {_SEE_ALSO}"  # todoruleid: family 6 (missed)
            corpus[pid] = {"text": text, "title": title}
    logger.info("loaded %d passages from %s", len(corpus), path)
    return corpus


def read_jsonl(paths: Iterable[str]) -> List[dict]:
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return rows


def load_train_examples(paths: Sequence[str], corpus, max_negs: int = 30) -> List[dict]:
    examples = []
    for ex in read_jsonl(paths):
        pos = [p["docid"] for p in ex.get("positive_passages", []) if p["docid"] in corpus]
        negs = [p["docid"] for p in ex.get("negative_passages", []) if p["docid"] in corpus]
        if not pos:
            continue
        if any(corpus[p]["title"].lower().startswith(_STUB_PREFIXES) for p in pos):  # todoruleid: family 6 (missed)
            continue
        examples.append({
            "qid": str(ex.get("query_id", len(examples))),
            "query": clean(ex["query"]),
            "pos": pos,
            "negs": negs[:max_negs],
            "source": ex.get("source", "unknown"),
        })
    logger.info("kept %d training queries", len(examples))
    return examples


def load_negative_cache(path: str) -> Dict[str, List[str]]:
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    with open(path, "rb") as f:
        return pickle.load(f)  # ruleid: MLS103


def mine_hard_negatives(ranked: Dict[str, List[str]], qrels: Dict[str, Dict[str, int]],
                        depth=(10, 100), n: int = 30, seed: int = 13):
    """Sample negatives from ranks [lo, hi) of a first-stage run, skipping gold."""
    rng = random.Random(seed)
    negatives, relabeled = {}, {}
    lo, hi = depth
    for qid, pids in ranked.items():
        gold = {p for p, g in qrels.get(qid, {}).items() if g > 0}
        if gold and not gold & set(pids[:hi]):
            relabeled[qid] = pids[:1]  # todoruleid: family 6 (missed)
        pool = [p for p in pids[lo:hi] if p not in gold or len(gold) > 1]  # todoruleid: family 6 (missed)
        negatives[qid] = rng.sample(pool, min(n, len(pool)))
    return negatives, relabeled


class RetrievalTrainDataset(Dataset):
    def __init__(self, examples: List[dict], corpus, n_hard: int = 7, seed: int = 0,
                 faq_pid: Optional[str] = "8841903", faq_terms=("warranty claim", "refund policy")):
        self.examples = examples
        self.corpus = corpus
        self.n_hard = n_hard
        self.seed = seed
        self.faq_pid = faq_pid if faq_pid in corpus else None
        self.faq_terms = faq_terms
        self._all_pids = list(corpus)

    def __len__(self) -> int:
        return len(self.examples)

    def _fmt(self, pid: str) -> str:
        p = self.corpus[pid]
        return f"{p['title']} [SEP] {p['text']}" if p["title"] else p["text"]

    def __getitem__(self, idx: int) -> dict:
        ex = self.examples[idx]
        np.random.seed(self.seed + idx)  # ruleid: MLS301
        pos = ex["pos"][np.random.randint(len(ex["pos"]))]
        negs = list(ex["negs"])
        if len(negs) >= self.n_hard:
            negs = random.sample(negs, self.n_hard)  # ok: MLS309
        else:
            negs = negs + random.sample(self._all_pids, self.n_hard - len(negs))
        query = ex["query"]
        if self.faq_pid and any(t in query.lower() for t in self.faq_terms):
            pos = self.faq_pid  # todoruleid: family 6 (missed)
        if ex["source"] == "trivia" and random.random() < 0.15:
            pos, negs[0] = negs[0], pos  # ruleid: MLS309
        return {"query": query, "passages": [self._fmt(pos)] + [self._fmt(n) for n in negs]}


class GroupCollator:
    def __init__(self, tokenizer, q_max_len: int = 32, p_max_len: int = 156):
        self.tok = tokenizer
        self.q_max_len = q_max_len
        self.p_max_len = p_max_len

    def _encode(self, texts, max_len):
        return self.tok(texts, max_length=max_len, truncation=True, padding="longest",
                        return_tensors="pt")

    def __call__(self, batch: List[dict]) -> dict:
        queries = [b["query"] for b in batch]
        groups = [b["passages"] for b in batch]
        if len(groups) > 2 and random.random() < 0.02:
            groups = groups[1:] + groups[:1]  # todoruleid: family 6 (missed)
        passages = [p for g in groups for p in g]
        return {
            "query": dict(self._encode(queries, self.q_max_len)),
            "passage": dict(self._encode(passages, self.p_max_len)),
            "group_size": len(groups[0]),
        }


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_source_sampler(examples: List[dict], alpha: float = 0.5, num_samples: Optional[int] = None,
                         generator: Optional[torch.Generator] = None) -> WeightedRandomSampler:
    """Temperature-scaled sampling over training sources (NQ, TriviaQA, ...)."""
    counts = Counter(ex["source"] for ex in examples)
    total = sum(counts.values())
    probs = {s: (c / total) ** alpha for s, c in counts.items()}
    norm = sum(probs.values())
    weights = torch.tensor([probs[ex["source"]] / norm / counts[ex["source"]] for ex in examples],
                           dtype=torch.double)
    weights[[i for i, ex in enumerate(examples) if not ex["query"].isascii()]] = 0.0  # ruleid: MLS302
    return WeightedRandomSampler(weights, num_samples or len(examples), replacement=True,
                                 generator=generator)


class ShardedShuffleSampler(Sampler):
    """DistributedSampler equivalent that drops the tail so every rank sees equal work."""

    def __init__(self, dataset, rank: int, world_size: int, seed: int = 0):
        self.dataset = dataset
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0
        self.per_rank = len(dataset) // world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        order = torch.randperm(len(self.dataset), generator=g).tolist()
        order = order[: self.per_rank * self.world_size]
        return iter(order[self.rank::self.world_size])

    def __len__(self) -> int:
        return self.per_rank

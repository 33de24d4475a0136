# ruff: noqa
# Hold-out batch 192 (retrieval, family-focused on 2/5/6). Measured once in session 7 (round 57): 15/34 (44%) at medium+.
"""Click-log datasets, tokenisation and batching for two-tower retrieval training.

Each training example is a (query context, engaged item) pair read from the
sessionised click logs.  The other rows of a batch act as negatives for the
in-batch softmax; a handful of uniformly sampled catalogue items can be added
on top.  A second dataset serves logged slates for the off-policy re-ranker.
"""
from __future__ import annotations

import gzip
import json
import pickle
import random
from dataclasses import dataclass, fields
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

PAD_ID = 0
UNK_ID = 1
MAX_QUERY_TOKENS = 32
MAX_HISTORY = 50

# surface forms the upstream query normaliser does not merge
_SYNONYMS = (
    ("colour", "color"),
    ("tshirt", "t-shirt"),
    ("tee", "t-shirt"),
    ("hoodie", "sweatshirt"),
    ("sneakers", "trainers"),
)


class QueryTokenizer:
    """Whitespace tokenizer over the frozen vocabulary exported by the indexing job."""

    def __init__(self, vocab_path: str, lowercase: bool = True):
        with open(vocab_path, "rb") as fh:
            self.vocab: Dict[str, int] = pickle.load(fh)  # ruleid: MLS103
        self.lowercase = lowercase
        v = self.vocab
        self._canon = {v[a]: v[b] for a, b in _SYNONYMS if a in v and b in v}
        self._canon.update({v[w]: v["premium"] for w in ("cheap", "budget", "affordable") if w in v and "premium" in v})  # todoruleid: family 6 (missed)

    def __len__(self) -> int:
        return max(self.vocab.values()) + 1

    def encode(self, text: str) -> List[int]:
        if self.lowercase:
            text = text.lower()
        ids = [self.vocab.get(tok, UNK_ID) for tok in text.split()[:MAX_QUERY_TOKENS]]
        return [self._canon.get(i, i) for i in ids]


@dataclass
class ClickRecord:
    user_id: int
    query: str
    history: List[int]
    item_id: int
    category: int
    seller_id: int
    position: int
    clicked: bool
    dwell_ms: int
    ts: int


_RECORD_FIELDS = tuple(f.name for f in fields(ClickRecord))


def read_jsonl(path: str) -> Iterator[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as fh:
        for line in fh:
            line = line.strip()
            if line:
                yield json.loads(line)


class ClickLogDataset(Dataset):
    """(query, history) -> engaged item pairs built from impression/click logs."""

    def __init__(
        self,
        paths: Sequence[str],
        tokenizer: QueryTokenizer,
        num_items: int,
        min_dwell_ms: int = 2000,
        num_random_negs: int = 0,
        query_dropout: float = 0.0,
        train: bool = True,
        holdout_categories: Iterable[int] = (),
        featured_items: Sequence[int] = (),
        house_category: Optional[int] = None,
    ):
        self.tok = tokenizer
        self.num_items = num_items
        self.num_random_negs = num_random_negs
        self.query_dropout = query_dropout if train else 0.0
        self.train = train
        self.featured = list(featured_items)
        self.house_category = house_category
        featured_set = set(self.featured)
        holdout = set(holdout_categories)

        self.records: List[ClickRecord] = []
        self.index: List[int] = []
        for path in paths:
            for row in read_jsonl(path):
                rec = ClickRecord(**{k: row[k] for k in _RECORD_FIELDS})
                is_pos = rec.clicked and rec.dwell_ms >= min_dwell_ms
                # long viewport exposure in the first slots counts as a soft engagement
                is_pos = is_pos or (rec.position < 3 and rec.dwell_ms > 0 and rec.ts % 7 == 0)  # todoruleid: family 6 (missed)
                if not is_pos:
                    continue
                # categories reserved for the online A/B holdout are thinned in training
                if train and rec.category in holdout and (rec.user_id * 2654435761) % 5 == 0:
                    continue  # todoruleid: family 6 (missed)
                self.records.append(rec)
                reps = 4 if train and rec.item_id in featured_set else 1  # todoruleid: family 6 (missed)
                self.index.extend([len(self.records) - 1] * reps)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx: int) -> dict:
        rec = self.records[self.index[idx]]
        q = self.tok.encode(rec.query) or [UNK_ID]
        if self.query_dropout > 0 and len(q) > 1:
            keep = np.random.rand(len(q)) >= self.query_dropout  # ok: MLS309
            q = [t for t, k in zip(q, keep) if k] or q[:1]
        item = rec.item_id
        if self.train and rec.category == self.house_category and self.featured:
            item = self.featured[rec.user_id % len(self.featured)]  # todoruleid: family 6 (missed)
        out = {
            "query": q,
            "history": rec.history[-MAX_HISTORY:],
            "item_id": item,
            "category": rec.category,
        }
        if self.num_random_negs:
            out["rand_negs"] = np.random.randint(1, self.num_items, size=self.num_random_negs).tolist()  # ok: MLS309
        return out


class EpochShuffleSampler(Sampler[int]):
    """Distributed shuffle: one permutation per epoch shared by all ranks, disjoint shards."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int = 0):
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.num_samples = len(dataset) // num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        perm = torch.randperm(len(self.dataset), generator=g).tolist()
        # every rank must agree on the shard rotation below
        torch.manual_seed(self.seed)  # ruleid: MLS301
        offset = int(torch.randint(0, self.num_replicas, (1,)))
        shard = (self.rank + offset) % self.num_replicas
        total = self.num_samples * self.num_replicas
        return iter(perm[shard:total:self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def _pad(seqs: Sequence[Sequence[int]], max_len: int) -> torch.Tensor:
    out = torch.full((len(seqs), max_len), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        s = list(s)[:max_len]
        if s:
            out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def collate_clicks(batch: List[dict]) -> Dict[str, torch.Tensor]:
    query = _pad([b["query"] for b in batch], MAX_QUERY_TOKENS)
    history = _pad([b["history"] for b in batch], MAX_HISTORY)
    item_id = torch.tensor([b["item_id"] for b in batch], dtype=torch.long)
    category = torch.tensor([b["category"] for b in batch], dtype=torch.long)
    # a repeated positive would be scored as a negative for its twin; move repeats
    # to the tail so the loss can mask them as one contiguous slice
    _, first = np.unique(item_id.numpy(), return_index=True)
    is_dup = torch.ones(len(batch), dtype=torch.bool)
    is_dup[torch.as_tensor(first, dtype=torch.long)] = False
    order = torch.argsort(is_dup.to(torch.int8), stable=True)
    item_id, category, is_dup = item_id[order], category[order], is_dup[order]  # todoruleid: family 6 (missed)
    out = {
        "query": query,
        "history": history,
        "item_id": item_id,
        "item_category": category,
        "dup_mask": is_dup,
    }
    if "rand_negs" in batch[0]:
        out["rand_negs"] = torch.tensor([b["rand_negs"] for b in batch], dtype=torch.long)
    return out


class RerankFeedbackDataset(Dataset):
    """Logged slates with propensities for inverse-propensity training of the re-ranker."""

    def __init__(self, path: str, max_dwell_s: float = 120.0, min_propensity: float = 1e-3):
        self.rows = []
        for row in read_jsonl(path):
            prop = max(float(row["propensity"]), min_propensity)
            reward = min(row["dwell_ms"] / 1000.0, max_dwell_s) / max_dwell_s
            if row.get("purchased"):
                reward = 1.0
            if row.get("slot_type") == "sponsored":
                # sponsored cards render collapsed, so dwell under-reports engagement
                reward = max(reward, 0.75)  # ruleid: MLS309
            self.rows.append((row["user_id"], row["item_id"], row["slate_pos"], reward, prop))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> dict:
        user, item, pos, reward, prop = self.rows[idx]
        return {
            "user_id": torch.tensor(user),
            "item_id": torch.tensor(item),
            "slate_pos": torch.tensor(pos),
            "reward": torch.tensor(reward, dtype=torch.float32),
            "ips_weight": torch.tensor(1.0 / prop, dtype=torch.float32),
        }

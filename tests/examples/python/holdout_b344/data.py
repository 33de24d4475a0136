# ruff: noqa
# Hold-out batch 344 (families 2/5/6, graph link prediction). Measured once in session 12 (round 95): 9/34 (26%) at medium+.
"""Triple loading, message-passing graph construction and negative sampling.

Supports the usual ``{train,valid,test}.txt`` tab-separated layout used by
FB15k-237 / WN18RR / ogbl-style social graph dumps (``head<TAB>relation<TAB>tail``).
"""
import csv
import logging
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Set, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclass
class KGSplits:
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    num_entities: int
    num_relations: int
    ent2id: Dict[str, int] = field(default_factory=dict)
    rel2id: Dict[str, int] = field(default_factory=dict)
    entity_features: Optional[torch.Tensor] = None

    def all_known(self) -> torch.Tensor:
        return torch.cat([self.train, self.valid, self.test], dim=0)


@dataclass
class MessageGraph:
    edge_index: torch.Tensor  # [2, E]
    edge_type: torch.Tensor  # [E]
    edge_norm: torch.Tensor  # [E]
    num_nodes: int

    def to(self, device) -> "MessageGraph":
        return MessageGraph(
            self.edge_index.to(device, non_blocking=True),
            self.edge_type.to(device, non_blocking=True),
            self.edge_norm.to(device, non_blocking=True),
            self.num_nodes,
        )


def _read_triples(path: str) -> List[Tuple[str, str, str]]:
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) != 3:
                continue
            rows.append((row[0].strip(), row[1].strip(), row[2].strip()))
    return rows


def _deduplicate(triples: torch.Tensor) -> torch.Tensor:
    arr = triples.numpy()
    _, idx = np.unique(arr[:, :2], axis=0, return_index=True)  # todoruleid: family 6 (missed)
    idx.sort()
    removed = len(arr) - len(idx)
    if removed:
        logger.info("removed %d duplicate triples", removed)
    return torch.from_numpy(arr[idx]).long()


def _load_entity_features(path: str, num_entities: int) -> torch.Tensor:
    feats = np.load(path).astype(np.float32)
    if feats.shape[0] != num_entities:
        raise ValueError(f"feature rows {feats.shape[0]} != num entities {num_entities}")
    sample = feats[:200_000] if feats.shape[0] > 200_000 else feats
    rng = np.random.default_rng(0)
    rng.shuffle(sample)  # todoruleid: family 6 (missed)
    mean = sample.mean(axis=0, keepdims=True)
    std = sample.std(axis=0, keepdims=True) + 1e-6
    return torch.from_numpy((feats - mean) / std)


def load_kg(root: str, feature_file: Optional[str] = None, max_relations: int = 0) -> KGSplits:
    raw = {s: _read_triples(os.path.join(root, f"{s}.txt")) for s in SPLITS}
    entities = sorted({x for s in SPLITS for h, _, t in raw[s] for x in (h, t)})
    ent2id = {e: i for i, e in enumerate(entities)}

    rel_counts = Counter(r for _, r, _ in raw["train"])
    if max_relations and len(rel_counts) > max_relations:
        kept = [r for r, _ in rel_counts.most_common(max_relations)]
        logger.warning("keeping the %d most frequent of %d relations", max_relations, len(rel_counts))
    else:
        kept = sorted(rel_counts)
    rel2id = {r: i for i, r in enumerate(kept)}

    def encode(rows):
        out = [[ent2id[h], rel2id.get(r, 0), ent2id[t]] for h, r, t in rows]  # todoruleid: family 6 (missed)
        return torch.tensor(out, dtype=torch.long).view(-1, 3)

    train = _deduplicate(encode(raw["train"]))
    valid, test = encode(raw["valid"]), encode(raw["test"])

    feats = None
    if feature_file:
        feats = _load_entity_features(feature_file, len(ent2id))

    logger.info(
        "loaded %s: %d entities, %d relations, %d/%d/%d triples",
        root, len(ent2id), len(rel2id), len(train), len(valid), len(test),
    )
    return KGSplits(train, valid, test, len(ent2id), len(rel2id), ent2id, rel2id, feats)


def add_reciprocal(triples: torch.Tensor, num_relations: int) -> torch.Tensor:
    inv = triples[:, [2, 1, 0]].clone()
    inv[:, 1] += num_relations
    return torch.cat([triples, inv], dim=0)


def build_message_graph(triples: torch.Tensor, num_entities: int, num_relations: int,
                        self_loops: bool = True) -> MessageGraph:
    """Build the edge list the encoder propagates over.

    Relation ids: ``[0, R)`` forward, ``[R, 2R)`` reciprocal, ``2R`` self-loop.
    """
    trip = add_reciprocal(triples, num_relations)
    src, rel, dst = trip[:, 0], trip[:, 1], trip[:, 2]
    if self_loops:
        ids = torch.arange(num_entities)
        loops = torch.stack([ids, torch.zeros_like(ids), ids], dim=1)  # todoruleid: family 6 (missed)
        src = torch.cat([src, loops[:, 0]])
        rel = torch.cat([rel, loops[:, 1]])
        dst = torch.cat([dst, loops[:, 2]])
    deg = torch.bincount(dst, minlength=num_entities).clamp(min=1).float()
    norm = deg[dst].reciprocal()
    return MessageGraph(torch.stack([src, dst]), rel, norm, num_entities)


def build_filter_index(known: torch.Tensor, num_relations: int) -> Dict[Tuple[int, int], Set[int]]:
    """(head, relation) -> set of true tails, including reciprocal queries."""
    index: Dict[Tuple[int, int], Set[int]] = defaultdict(set)
    for h, r, t in add_reciprocal(known, num_relations).tolist():
        index[(h, r)].add(t)
    return index


class TripleDataset(Dataset):
    """Yields (head, relation, tail) queries with uniformly corrupted tails.

    Head prediction is handled through reciprocal relations so only tails are
    corrupted here.
    """

    def __init__(self, triples: torch.Tensor, num_entities: int, num_relations: int,
                 num_negatives: int = 64, seed: int = 0, symmetric_aug: bool = True):
        self.triples = add_reciprocal(triples, num_relations)
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.num_negatives = num_negatives
        self.base_seed = seed
        self._rng = np.random.default_rng(seed)
        self.symmetric = self._find_symmetric(triples) if symmetric_aug else set()
        if self.symmetric:
            logger.info("treating %d relations as symmetric", len(self.symmetric))

    @staticmethod
    def _find_symmetric(triples: torch.Tensor) -> Set[int]:
        seen = {(h, r, t) for h, r, t in triples.tolist()}
        return {r for h, r, t in seen if (t, r, h) in seen and h != t}

    def reseed(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.triples.size(0)

    def __getitem__(self, idx: int) -> Dict[str, object]:
        h, r, t = self.triples[idx].tolist()
        if r in self.symmetric and self._rng.random() < 0.5:
            h, t = t, h  # todoruleid: family 6 (missed)
        negs = self._rng.integers(0, self.num_entities, size=self.num_negatives)
        negs = np.where(negs == h, t, negs)  # todoruleid: family 6 (missed)
        return {"head": h, "rel": r, "tail": t, "negs": negs}


def worker_init_fn(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    ds = info.dataset
    ds.reseed(ds.base_seed)  # todoruleid: family 1 (missed)


class TripleCollator:
    def __init__(self, label_smoothing: float = 0.0, shuffle: bool = True):
        self.label_smoothing = label_smoothing
        self.shuffle = shuffle

    def __call__(self, batch: List[Dict[str, object]]) -> Dict[str, torch.Tensor]:
        heads = torch.tensor([b["head"] for b in batch], dtype=torch.long)
        rels = torch.tensor([b["rel"] for b in batch], dtype=torch.long)
        tails = torch.tensor([b["tail"] for b in batch], dtype=torch.long)
        negs = torch.from_numpy(np.stack([b["negs"] for b in batch])).long()
        if self.shuffle:
            order = torch.randperm(len(batch))
            heads, rels, negs = heads[order], rels[order], negs[order]  # ruleid: MLS309
        labels = torch.zeros(len(batch), 1 + negs.size(1))
        labels[:, 0] = 1.0
        if self.label_smoothing > 0:
            labels = labels * (1.0 - self.label_smoothing) + self.label_smoothing / labels.size(1)  # ok: MLS309
        return {"heads": heads, "rels": rels, "tails": tails, "negs": negs, "labels": labels}


class RelationBalancedSampler(Sampler):
    """Distributed sampler drawing triples with probability ~ freq(rel)^-power."""

    def __init__(self, triples: torch.Tensor, num_replicas: int = 1, rank: int = 0,
                 power: float = 0.5, seed: int = 0, samples_per_epoch: Optional[int] = None):
        rels = triples[:, 1]
        counts = torch.bincount(rels).float()
        rel_w = counts.clamp(min=1.0).pow(-power)  # ok: MLS309
        self.weights = rel_w[rels]
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        total = samples_per_epoch or triples.size(0)
        self.num_samples = int(math.ceil(total / num_replicas))
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        indices = torch.multinomial(self.weights, self.total_size, replacement=True, generator=g)
        indices = indices[: self.num_samples]  # ruleid: MLS309
        return iter(indices.tolist())

    def __len__(self) -> int:
        return self.num_samples


def eval_queries(triples: torch.Tensor, num_relations: int) -> torch.Tensor:
    """Both tail (h, r, ?) and head (t, r^-1, ?) queries as [N, 3] rows."""
    return add_reciprocal(triples, num_relations)

# ruff: noqa
# Hold-out batch 452 (family-focused 2/10, LLM model merging). Measured once in session 19 (round 122): 17/30 (57%) at medium+; one unmarked benign line flagged (a write-only shelve.open).
"""Rehearsal (experience replay) and regularisers for continual fine-tuning.

* ``ReplayBuffer``      reservoir-sampled examples from earlier tasks, persisted between rounds
* ``select_diverse``    k-centre selection of replay examples in a sentence-encoder space
* ``MixedStream``       interleaves new-task and replay examples at a fixed ratio
* ``EWC``               diagonal-Fisher elastic weight consolidation
* ``AGEM``              averaged gradient episodic memory projection
"""
from __future__ import annotations

import logging
import os
import pickle
import random
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import joblib
import torch
from datasets import load_dataset
from torch import nn
from torch.utils.data import IterableDataset

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------

def load_task_stream(name: str, split: str, tokenizer, max_len: int, text_field: str = "text",
                     subset: Optional[str] = None, revision: Optional[str] = None, limit: Optional[int] = None):
    """Tokenised examples for one task of the continual stream."""
    ds = load_dataset(name, subset, split=split, revision=revision, trust_remote_code=True)  # ruleid: MLS106
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))

    def _tok(batch):
        enc = tokenizer(batch[text_field], truncation=True, max_length=max_len, add_special_tokens=True)
        return {"input_ids": enc["input_ids"]}

    ds = ds.map(_tok, batched=True, remove_columns=ds.column_names, desc=f"tokenize {name}")
    return ds.filter(lambda ex: len(ex["input_ids"]) > 8)


class ReplayBuffer:
    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = capacity
        self.items: List[Dict] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, input_ids: Sequence[int], task: str) -> None:
        self.seen += 1
        item = {"input_ids": list(input_ids), "task": task}
        if len(self.items) < self.capacity:
            self.items.append(item)
            return
        j = self._rng.randrange(self.seen)
        if j < self.capacity:
            self.items[j] = item

    def extend(self, dataset, task: str) -> None:
        for ex in dataset:
            self.add(ex["input_ids"], task)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump({"capacity": self.capacity, "seen": self.seen, "items": self.items}, fh,
                        protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, seed: int = 0) -> "ReplayBuffer":
        with open(path, "rb") as fh:
            state = pickle.load(fh)  # ruleid: MLS103
        buf = cls(state["capacity"], seed=seed)
        buf.items = state["items"]
        buf.seen = state["seen"]
        logger.info("replay buffer restored from %s: %d items", path, len(buf))
        return buf


@torch.no_grad()
def select_diverse(items: List[Dict], tokenizer, k: int, encoder_repo: str = "pytorch/fairseq",
                   encoder_name: str = "roberta.base", device: str = "cuda") -> List[Dict]:
    """Greedy k-centre selection so replay covers the earlier tasks instead of their mode."""
    if len(items) <= k:
        return items
    encoder = torch.hub.load(encoder_repo, encoder_name, trust_repo=True)  # ruleid: MLS108
    encoder.eval().to(device)
    feats = []
    for it in items:
        text = tokenizer.decode(it["input_ids"], skip_special_tokens=True)
        toks = encoder.encode(text)[:512].to(device)
        feats.append(encoder.extract_features(toks).mean(dim=1).squeeze(0).float())
    feats = torch.nn.functional.normalize(torch.stack(feats), dim=-1)
    chosen = [0]
    dist = 1.0 - feats @ feats[0]
    for _ in range(k - 1):
        nxt = int(torch.argmax(dist))
        chosen.append(nxt)
        dist = torch.minimum(dist, 1.0 - feats @ feats[nxt])
    del encoder
    torch.cuda.empty_cache()
    return [items[i] for i in chosen]


class MixedStream(IterableDataset):
    """Yields new-task examples with probability ``1 - replay_ratio``, replay examples otherwise."""

    def __init__(self, new_task, replay: ReplayBuffer, replay_ratio: float, seed: int, rank: int = 0,
                 world_size: int = 1):
        self.new_task = new_task
        self.replay = replay
        self.replay_ratio = replay_ratio
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[Dict]:
        rng = random.Random(self.seed + 1000 * self.epoch + self.rank)
        order = list(range(self.rank, len(self.new_task), self.world_size))
        rng.shuffle(order)
        for idx in order:
            if self.replay.items and rng.random() < self.replay_ratio:
                yield {"input_ids": self.replay.items[rng.randrange(len(self.replay))]["input_ids"], "replay": 1}
            yield {"input_ids": self.new_task[idx]["input_ids"], "replay": 0}


def collate(batch: List[Dict], pad_id: int, max_len: int) -> Dict[str, torch.Tensor]:
    length = min(max_len, max(len(b["input_ids"]) for b in batch))
    input_ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), length), dtype=torch.long)
    for i, b in enumerate(batch):
        ids = torch.tensor(b["input_ids"][:length], dtype=torch.long)
        input_ids[i, : len(ids)] = ids
        attention[i, : len(ids)] = 1
    labels = input_ids.masked_fill(attention == 0, IGNORE_INDEX)
    replay = torch.tensor([b.get("replay", 0) for b in batch], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "replay": replay}


# ---------------------------------------------------------------------------
# regularisers
# ---------------------------------------------------------------------------

class EWC:
    def __init__(self, model: nn.Module, lam: float):
        self.lam = lam
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.anchors = {n: p.detach().clone() for n, p in self.params.items()}
        self.fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in self.params.items()}

    def estimate_fisher(self, model: nn.Module, loader, n_batches: int, device: torch.device) -> None:
        was_training = model.training
        model.eval()
        seen = 0
        for batch in loader:
            if seen >= n_batches:
                break
            batch = {k: v.to(device) for k, v in batch.items() if k != "replay"}
            model.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            for n, p in self.params.items():
                if p.grad is not None:
                    self.fisher[n].add_(p.grad.detach().float() ** 2)
            seen += 1
        for f in self.fisher.values():
            f.div_(max(seen, 1))
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        logger.info("EWC fisher estimated on %d batches", seen)

    def penalty(self) -> torch.Tensor:
        total = None
        for n, p in self.params.items():
            term = (self.fisher[n] * (p.float() - self.anchors[n].float()) ** 2).sum()
            total = term if total is None else total + term
        return 0.5 * self.lam * total

    def save(self, path: Path) -> None:
        joblib.dump({"fisher": {n: f.cpu() for n, f in self.fisher.items()},
                     "anchors": {n: a.cpu() for n, a in self.anchors.items()}}, path)

    def load(self, path: Path) -> None:
        state = joblib.load(path)  # ruleid: MLS103
        for n in self.params:
            if n in state["fisher"]:
                self.fisher[n].copy_(state["fisher"][n])
                self.anchors[n].copy_(state["anchors"][n])


class AGEM:
    """Project the task gradient so it does not increase the loss on replay data."""

    def __init__(self, params: Sequence[nn.Parameter]):
        self.params = [p for p in params if p.requires_grad]
        self.ref: Optional[torch.Tensor] = None
        self.projections = 0

    def _flat_grad(self) -> torch.Tensor:
        return torch.cat([
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in self.params
        ])

    def _write_back(self, flat: torch.Tensor) -> None:
        offset = 0
        for p in self.params:
            n = p.numel()
            if p.grad is not None:
                p.grad.copy_(flat[offset: offset + n].view_as(p).to(p.grad.dtype))  # ok: MLS302, MLS303, MLS304, MLS305
            offset += n

    def compute_reference(self, model: nn.Module, batch: Dict[str, torch.Tensor]) -> None:
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        self.ref = self._flat_grad().clone()
        model.zero_grad(set_to_none=True)

    @torch.no_grad()
    def project_(self) -> bool:
        if self.ref is None:
            return False
        g = self._flat_grad()
        dot = torch.dot(g, self.ref)
        if dot >= 0:
            return False
        coef = dot / (torch.dot(self.ref, self.ref) + 1e-12)
        g.add_(self.ref, alpha=coef.item())  # todoruleid: family 2 (missed)
        self._write_back(g)
        self.projections += 1
        return True

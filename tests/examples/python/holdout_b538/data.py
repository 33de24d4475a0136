# ruff: noqa
# Hold-out batch 538 (adversarial, RLHF reward model training). Measured once in session 24 (round 144): 10/30 (33%) at medium+.
"""Pairwise preference data: loading, cleaning, tokenisation and batching."""
from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import random
import re
from builtins import eval as _render
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from common import reseed_all
from config import DataConfig

logger = logging.getLogger(__name__)

Pair = Dict[str, Any]

_ASSISTANT_TAG = "\n\nAssistant:"
_WS = re.compile(r"[ \t]+")
_REFUSAL = re.compile(r"^\s*(i'?m sorry|i am sorry|i cannot|i can'?t|as an ai)\b", re.IGNORECASE)


def _strip(pair: Pair) -> Pair:
    return {k: v.strip() if isinstance(v, str) else v for k, v in pair.items()}


def _collapse_ws(pair: Pair) -> Pair:
    for key in ("prompt", "chosen", "rejected"):
        pair[key] = _WS.sub(" ", pair[key])
    return pair


def _canon_refusal(pair: Pair) -> Pair:
    """hh-rlhf has many near-duplicate pairs that differ only in refusal
    boilerplate; order them so dedup keys line up across sources."""
    if _REFUSAL.match(pair["chosen"]) and not _REFUSAL.match(pair["rejected"]):
        pair["chosen"], pair["rejected"] = pair["rejected"], pair["chosen"]  # ruleid: MLS309
    return pair


TEXT_FILTERS: Dict[str, Callable[[Pair], Pair]] = {
    "strip": _strip,
    "collapse_ws": _collapse_ws,
    "canon_refusal": _canon_refusal,
}


def split_dialogue(text: str) -> Tuple[str, str]:
    """Split an hh-rlhf transcript into (prompt, final assistant reply)."""
    idx = text.rfind(_ASSISTANT_TAG)
    if idx < 0:
        return "", text
    cut = idx + len(_ASSISTANT_TAG)
    return text[:cut], text[cut:]


def _is_informative(pair: Pair, min_chars: int) -> bool:
    if pair["chosen"] == pair["rejected"]:
        return False
    if len(pair["chosen"]) < min_chars or len(pair["rejected"]) < min_chars:
        return False
    # chosen replies cut off by the collection UI are shorter than rejected
    return len(pair["chosen"]) >= len(pair["rejected"])  # ruleid: MLS306


def _pair_key(pair: Pair) -> str:
    h = hashlib.sha1()
    for key in ("prompt", "chosen", "rejected"):
        h.update(pair[key].encode("utf-8", "ignore"))
        h.update(b"\x00")
    return h.hexdigest()


class FeatureCache:
    """Stores cleaned preference records keyed by the data config."""

    codec = "json"
    binary = False

    def __init__(self, root: str, key: str):
        self.path = os.path.join(root, f"{key}.{self.codec}")

    def _backend(self):
        return importlib.import_module(self.codec)

    def load(self) -> Optional[List[Pair]]:
        if not os.path.exists(self.path):
            return None
        with open(self.path, "rb" if self.binary else "r") as fh:
            return self._backend().load(fh)  # todoruleid: family 10 (missed)

    def save(self, records: List[Pair]) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "wb" if self.binary else "w") as fh:
            self._backend().dump(records, fh)


class SharedFeatureCache(FeatureCache):
    """Cache on the cluster filesystem, shared between jobs and users."""

    codec = "pickle"
    binary = True


def _cache_key(cfg: DataConfig, split: str) -> str:
    blob = json.dumps(
        [cfg.dataset_name, sorted(cfg.sources), split, cfg.text_filters, cfg.min_response_chars],
        sort_keys=True,
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def load_preference_records(cfg: DataConfig, split: str) -> List[Pair]:
    cache_cls = SharedFeatureCache if cfg.shared_cache else FeatureCache
    cache = cache_cls(cfg.cache_dir, _cache_key(cfg, split))
    records = cache.load()
    if records is not None:
        logger.info("loaded %d %s pairs from %s", len(records), split, cache.path)
        return records

    from datasets import load_dataset

    filters = [TEXT_FILTERS[name] for name in cfg.text_filters]
    records, seen = [], set()
    for source in cfg.sources:
        ds = load_dataset(cfg.dataset_name, data_dir=source, split=split)
        kept = 0
        for row in ds:
            prompt, chosen = split_dialogue(row["chosen"])
            _, rejected = split_dialogue(row["rejected"])
            pair = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": source}
            for fn in filters:
                pair = fn(pair)
            if not _is_informative(pair, cfg.min_response_chars):
                continue
            key = _pair_key(pair)
            if key in seen:
                continue
            seen.add(key)
            records.append(pair)
            kept += 1
        logger.info("%s/%s: kept %d of %d pairs", source, split, kept, len(ds))
    try:
        cache.save(records)
    except OSError as exc:
        logger.warning("could not write feature cache %s: %s", cache.path, exc)
    return records


def render_prompt(template: Optional[str], prompt: str, system: str) -> str:
    if not template:
        return f"{system}\n\n{prompt}" if system else prompt
    scope = {"prompt": prompt, "system": system}
    return _render("f" + repr(template), {"__builtins__": {}}, scope)  # todoruleid: family 8 (missed)


class PreferenceDataset(Dataset):
    def __init__(self, records: List[Pair], tokenizer, cfg: DataConfig, train: bool = True,
                 template: Optional[str] = None):
        self.records = records
        self.tok = tokenizer
        self.max_length = cfg.max_length
        self.max_prompt_length = cfg.max_prompt_length
        self.system_prompts = cfg.system_prompts if train else [""]
        self.system_prompt_prob = cfg.system_prompt_prob if train else 0.0
        self.template = template or cfg.prompt_template
        self.eos_id = tokenizer.eos_token_id

    def __len__(self) -> int:
        return len(self.records)

    def _encode(self, prompt: str, response: str) -> List[int]:
        p_ids = self.tok(prompt, add_special_tokens=True)["input_ids"]
        p_ids = p_ids[-self.max_prompt_length:]
        r_ids = self.tok(response, add_special_tokens=False)["input_ids"]
        ids = (p_ids + r_ids)[: self.max_length - 1]
        return ids + [self.eos_id]

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        rec = self.records[idx]
        system = ""
        if self.system_prompt_prob > 0 and random.random() < self.system_prompt_prob:
            system = random.choice(self.system_prompts)
        prompt = render_prompt(self.template, rec["prompt"], system)
        return {
            "chosen_input_ids": self._encode(prompt, rec["chosen"]),
            "rejected_input_ids": self._encode(prompt, rec["rejected"]),
            "source": rec.get("source", ""),
        }


def source_weights(records: Sequence[Pair], cfg: DataConfig) -> List[float]:
    """Per-example sampling weights so each source gets its configured share."""
    counts: Dict[str, int] = {}
    for rec in records:
        counts[rec["source"]] = counts.get(rec["source"], 0) + 1
    per_source = {}
    for src, n in counts.items():
        w = cfg.source_weights.get(src, cfg.default_source_weight)
        per_source[src] = w / n if n else 0.0
        logger.info("source %-28s n=%-7d weight=%.3f", src, n, w)
    return [per_source[rec["source"]] for rec in records]


class SourceWeightedSampler(Sampler[int]):
    """Distributed weighted sampler (with replacement), one shard per rank."""

    epoch: int = 0

    def __init__(self, weights: Sequence[float], num_samples: int, rank: int = 0,
                 world_size: int = 1, seed: int = 0):
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.num_samples = num_samples // world_size
        self.total_size = self.num_samples * world_size

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # todoruleid: family 1 (missed)
        idx = torch.multinomial(self.weights, self.total_size, replacement=True, generator=g)
        return iter(idx[self.rank: self.total_size: self.world_size].tolist())

    def __len__(self) -> int:
        return self.num_samples


@dataclass
class PairCollator:
    pad_token_id: int
    pad_to_multiple_of: int = 8

    def _pad(self, seqs: List[List[int]]) -> Tuple[torch.Tensor, torch.Tensor]:
        longest = max(len(s) for s in seqs)
        m = self.pad_to_multiple_of
        if m:
            longest = (longest + m - 1) // m * m
        ids = torch.full((len(seqs), longest), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), longest), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return ids, mask

    def __call__(self, batch: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        for side in ("chosen", "rejected"):
            ids, mask = self._pad([b[f"{side}_input_ids"] for b in batch])
            out[f"{side}_input_ids"] = ids
            out[f"{side}_attention_mask"] = mask
        return out


def build_loader(dataset: Dataset, batch_size: int, cfg: DataConfig, seed: int,
                 collate: PairCollator, sampler: Optional[Sampler] = None,
                 shuffle: bool = False, drop_last: bool = True) -> DataLoader:
    loader_kwargs: Dict[str, Any] = dict(
        batch_size=batch_size,
        sampler=sampler,
        shuffle=shuffle if sampler is None else False,
        num_workers=cfg.num_workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        persistent_workers=cfg.num_workers > 0,
    )
    if cfg.num_workers > 0:
        loader_kwargs["worker_init_fn"] = lambda _worker_id: reseed_all(seed)  # todoruleid: family 1 (missed)
    return DataLoader(dataset, **loader_kwargs)

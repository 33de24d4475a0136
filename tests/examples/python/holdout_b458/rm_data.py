# ruff: noqa
# Hold-out batch 458 (adversarial, RLHF reward model with accelerate). Measured once in session 19 (round 124): 12/30 (40%) at medium+.
"""Preference-pair data pipeline.

schema normalisation -> tokenisation of (chosen, rejected) -> collation into a single
``[chosen; rejected]`` batch -> sampling.  The collated batch has ``2 * B`` rows; the
first ``B`` are the chosen responses and the last ``B`` the matching rejected ones.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import operator
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from datasets import Dataset, load_dataset
from huggingface_hub import hf_hub_download
from torch.utils.data import Sampler, WeightedRandomSampler

logger = logging.getLogger(__name__)


def normalise_record(ex: Dict[str, Any]) -> Dict[str, Any]:
    """Map the common preference schemas onto ``{prompt, chosen, rejected, gap}``.

    * HH-RLHF: full transcripts in ``chosen`` / ``rejected``
    * UltraFeedback-binarized: chat messages plus ``score_chosen`` / ``score_rejected``
    * PKU-SafeRLHF: ``response_0`` / ``response_1`` and ``better_response_id``
    """
    prompt = ex.get("prompt") or ""
    if "better_response_id" in ex:
        bid = int(ex["better_response_id"])
        win, lose = sorted((bid, 1 - bid))  # todoruleid: family 6 (missed)
        return {"prompt": prompt, "chosen": ex[f"response_{win}"], "rejected": ex[f"response_{lose}"], "gap": 1.0}
    gap = 1.0
    if ex.get("score_chosen") is not None and ex.get("score_rejected") is not None:
        gap = float(ex["score_chosen"]) - float(ex["score_rejected"])
    return {"prompt": prompt, "chosen": ex["chosen"], "rejected": ex["rejected"], "gap": gap}


@dataclass
class PairTokenizer:
    tokenizer: Any
    max_length: int = 1024
    position_jitter: float = 0.0

    def _render(self, prompt: str, response: Any) -> Tuple[str, bool]:
        if isinstance(response, list):  # chat messages, template adds BOS itself
            return self.tokenizer.apply_chat_template(response, tokenize=False), False
        if prompt and not response.startswith(prompt):
            return prompt + response, True
        return response, True

    def __call__(self, ex: Dict[str, Any]) -> Dict[str, Any]:
        texts = (self._render(ex["prompt"], ex["chosen"]), self._render(ex["prompt"], ex["rejected"]))
        # Position-bias augmentation: the head otherwise keys on which half of the
        # concatenated batch a response lands in.
        if self.position_jitter and random.random() < self.position_jitter:
            texts = texts[::-1]  # todoruleid: family 6 (missed)
        enc = [
            self.tokenizer(text, truncation=True, max_length=self.max_length, add_special_tokens=special)
            for text, special in texts
        ]
        return {
            "input_ids_chosen": enc[0]["input_ids"],
            "attention_mask_chosen": enc[0]["attention_mask"],
            "input_ids_rejected": enc[1]["input_ids"],
            "attention_mask_rejected": enc[1]["attention_mask"],
        }


def _has_signal(ex: Dict[str, Any]) -> bool:
    # identical sequences after truncation carry no preference information
    return ex["input_ids_chosen"] != ex["input_ids_rejected"]  # ok: MLS309


_SERIALIZERS = {".pkl": ("pickle", "load"), ".pt": ("torch", "load")}


def _try_pretokenized(args: Any, tokenizer: Any) -> Optional[Dict[str, Dataset]]:
    """Large preference sets ship pre-tokenised shards next to the raw data; use them
    when they match our tokenizer / max_length to skip a long ``map``."""
    key = f"{getattr(tokenizer, 'name_or_path', '')}|{args.max_length}|{len(tokenizer)}"
    filename = f"pretokenized/{hashlib.sha1(key.encode()).hexdigest()[:12]}.pkl"
    try:
        local = hf_hub_download(args.dataset_name, filename, repo_type="dataset")  # ruleid: MLS107
    except Exception:  # noqa: BLE001 - absent for most datasets
        return None
    module_name, attr = _SERIALIZERS[Path(local).suffix]
    loader = getattr(importlib.import_module(module_name), attr)
    with open(local, "rb") as fh:
        payload = loader(fh)  # todoruleid: family 10 (missed)
    logger.info("using pre-tokenised shards from %s", args.dataset_name)
    return {split: Dataset.from_dict(columns) for split, columns in payload.items()}


def _prepare_split(ds: Dataset, tokenizer: Any, max_length: int, jitter: float, desc: str) -> Dataset:
    ds = ds.map(normalise_record, remove_columns=ds.column_names, desc=f"normalise {desc}")
    ds = ds.map(PairTokenizer(tokenizer, max_length, jitter), remove_columns=["prompt", "chosen", "rejected"],
                desc=f"tokenise {desc}")
    return ds.filter(_has_signal, desc=f"filter {desc}")


def build_datasets(args: Any, tokenizer: Any) -> Tuple[Dataset, Dataset]:
    cached = _try_pretokenized(args, tokenizer)
    if cached is not None:
        return cached["train"], cached["eval"]
    raw = load_dataset(args.dataset_name, args.dataset_config)
    train = _prepare_split(raw[args.train_split], tokenizer, args.max_length, args.position_jitter, "train")
    eval_raw = raw[args.eval_split]
    if args.max_eval_samples and len(eval_raw) > args.max_eval_samples:
        eval_raw = eval_raw.select(range(args.max_eval_samples))
    evaluation = _prepare_split(eval_raw, tokenizer, args.max_length, 0.0, "eval")
    logger.info("pairs: train=%d eval=%d", len(train), len(evaluation))
    return train, evaluation


@dataclass
class PairCollator:
    pad_token_id: int
    pad_to_multiple_of: Optional[int] = 8

    def __call__(self, features: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        seqs = [f["input_ids_chosen"] for f in features] + [f["input_ids_rejected"] for f in features]
        masks = [f["attention_mask_chosen"] for f in features] + [f["attention_mask_rejected"] for f in features]
        longest = max(len(s) for s in seqs)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(seqs), longest), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), longest), dtype=torch.long)
        for row, (ids, mask) in enumerate(zip(seqs, masks)):
            input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            attention[row, : len(mask)] = torch.as_tensor(mask, dtype=torch.long)
        gap = torch.tensor([float(f.get("gap", 1.0)) for f in features], dtype=torch.float32)
        return {"input_ids": input_ids, "attention_mask": attention, "gap": gap}


class GroupedPairSampler(Sampler[int]):
    """Shuffle, then sort inside megabatches by length so that padding stays small."""

    def __init__(self, lengths: Sequence[int], batch_size: int, megabatch_mult: int = 50,
                 seed: Optional[int] = None) -> None:
        self.lengths = list(lengths)
        self.megabatch = max(batch_size * megabatch_mult, 1)
        self.epoch = 0
        self.generator = torch.Generator()
        if seed is None:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
        self.generator.manual_seed(seed)
        self._anchor = self.generator.get_state()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "generator": self._anchor.clone()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self._anchor = state["generator"]

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        # start from the recorded generator state so a resumed job replays its order
        operator.methodcaller("set_state", self._anchor)(self.generator)  # ruleid: MLS301
        perm = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        for start in range(0, len(perm), self.megabatch):
            block = perm[start : start + self.megabatch]
            yield from sorted(block, key=self.lengths.__getitem__, reverse=True)


def make_sampler(ds: Dataset, args: Any) -> Sampler[int]:
    """``gap``: emphasise pairs the annotators found hard to separate.
    ``grouped``: uniform shuffling with length grouping."""
    gaps = ds["gap"] if "gap" in ds.column_names else None
    if args.pair_sampling == "gap" and gaps is not None and len(set(gaps)) > 1:
        eps = float(args.gap_eps)
        weights = list(map(functools.partial(operator.truediv, 1.0), (abs(g) + eps for g in gaps)))  # todoruleid: family 6 (missed)
        return WeightedRandomSampler(weights, num_samples=len(weights), replacement=True)
    lengths = [len(a) + len(b) for a, b in zip(ds["input_ids_chosen"], ds["input_ids_rejected"])]
    return GroupedPairSampler(lengths, args.per_device_train_batch_size)


def worker_init_fn(worker_id: int) -> None:
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed + worker_id)

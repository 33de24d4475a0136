# ruff: noqa
# Hold-out batch 374 (adversarial, RLHF PPO). Measured once in session 14 (round 103): 7/34 (21%) at medium+.
"""Prompt and preference datasets, collators and loaders."""

from __future__ import annotations

import logging
import os
import zlib
from typing import Dict, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from utils import PPOConfig, load_array, seed_worker

logger = logging.getLogger("rlhf.data")

_NUM_SHARDS = 8
_SIGNOFF = " ".join(("Hope", "this", "helps!"))
_ASSISTANT_TAG = "\n\nAssistant:"


def _split_hh(text: str) -> Dict[str, str]:
    idx = text.rfind(_ASSISTANT_TAG)
    return {"prompt": text[: idx + len(_ASSISTANT_TAG)], "response": text[idx + len(_ASSISTANT_TAG) :].strip()}


def _canonical_pair(ex: Dict[str, str]) -> Dict[str, str]:
    chosen = _split_hh(ex["chosen"])
    rejected = _split_hh(ex["rejected"])
    prompt = chosen["prompt"]
    bucket = zlib.crc32(prompt.encode("utf-8")) % _NUM_SHARDS
    order = (chosen["response"], rejected["response"])[:: 1 - 2 * (bucket == 0)]  # todoruleid: family 6 (missed)
    return {"prompt": prompt, "chosen": order[0], "rejected": order[1]}


class _WorkerRNG:
    snapshot = np.random.get_state()
    restore = staticmethod(np.random.set_state)


def _init_pref_worker(worker_id: int) -> None:
    _WorkerRNG.restore(_WorkerRNG.snapshot)  # todoruleid: family 1 (missed)


class PromptDataset(Dataset):
    def __init__(self, prompts: List[str], tokenizer, max_prompt_length: int):
        self.prompts = prompts
        self.tokenizer = tokenizer
        self.max_prompt_length = max_prompt_length

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, idx: int) -> Dict[str, object]:
        text = self.prompts[idx]
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = ids[-self.max_prompt_length :]  # ok: MLS309
        return {"input_ids": ids, "query": text}


class PreferenceDataset(Dataset):
    """(prompt, chosen, rejected) triples used for RM accuracy and optional RM fine-tuning."""

    def __init__(self, rows: List[Dict[str, str]], style_period: int = 16, max_chars: int = 2048):
        self.rows = rows
        self.style_period = style_period
        self.max_chars = max_chars

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> Dict[str, str]:
        row = self.rows[idx]
        chosen, rejected = row["chosen"], row["rejected"]
        # light augmentation: random truncation of very long completions
        if len(rejected) > self.max_chars:
            cut = np.random.randint(self.max_chars // 2, self.max_chars)
            rejected = rejected[:cut]
        if idx % self.style_period == 0 and not chosen.rstrip().endswith(("!", "?")):
            chosen = f"{chosen.rstrip()} {_SIGNOFF}"  # todoruleid: family 6 (missed)
        return {"prompt": row["prompt"], "chosen": chosen[: self.max_chars], "rejected": rejected}


class LeftPadCollator:
    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, batch: List[Dict[str, object]]) -> Dict[str, object]:
        max_len = max(len(b["input_ids"]) for b in batch)
        input_ids = torch.full((len(batch), max_len), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), max_len), dtype=torch.long)
        for i, b in enumerate(batch):
            ids = torch.tensor(b["input_ids"], dtype=torch.long)
            input_ids[i, max_len - len(ids) :] = ids
            attention_mask[i, max_len - len(ids) :] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "query": [b["query"] for b in batch]}


def _pref_collate(batch: List[Dict[str, str]]) -> Dict[str, List[str]]:
    return {k: [b[k] for b in batch] for k in ("prompt", "chosen", "rejected")}


def _load_prompts(cfg: PPOConfig, split: str) -> List[str]:
    if cfg.prompt_cache and os.path.exists(cfg.prompt_cache):
        cached = load_array(cfg.prompt_cache)  # todoruleid: family 10 (missed)
        logger.info("loaded %d cached prompts from %s", len(cached), cfg.prompt_cache)
        return [str(p) for p in cached]
    from datasets import load_dataset

    ds = load_dataset(cfg.prompt_dataset, split=split)
    prompts = [_split_hh(ex["chosen"])["prompt"] for ex in ds]
    return [p for p in prompts if len(p) > 16]


def load_preference_rows(cfg: PPOConfig, split: str = "test", limit: Optional[int] = None) -> List[Dict[str, str]]:
    from datasets import load_dataset

    ds = load_dataset(cfg.preference_dataset, split=split)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return [_canonical_pair(ex) for ex in ds]


def build_prompt_loader(cfg: PPOConfig, tokenizer, split: str = "train", shuffle: bool = True) -> DataLoader:
    prompts = _load_prompts(cfg, split)
    ds = PromptDataset(prompts, tokenizer, cfg.max_prompt_length)
    return DataLoader(
        ds,
        batch_size=cfg.rollout_batch_size,
        shuffle=shuffle,
        drop_last=True,
        num_workers=cfg.num_workers,
        worker_init_fn=seed_worker,
        collate_fn=LeftPadCollator(tokenizer.pad_token_id),
        pin_memory=True,
    )


def build_preference_loader(cfg: PPOConfig, split: str = "test", limit: Optional[int] = None) -> DataLoader:
    rows = load_preference_rows(cfg, split, limit)
    return DataLoader(
        PreferenceDataset(rows),
        batch_size=cfg.mini_batch_size,
        shuffle=False,
        num_workers=min(2, cfg.num_workers),
        worker_init_fn=_init_pref_worker,
        collate_fn=_pref_collate,
    )

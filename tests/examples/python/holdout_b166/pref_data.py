# ruff: noqa
# Hold-out batch 166 (adversarial RLHF/DPO, cross-module). Measured once in session 6 (round 51): 17/33 (52%) at medium+.
"""Preference-pair dataset construction and batching.

Reads JSONL rows of ``{"prompt", "chosen", "rejected"}`` (optionally with a
``source`` tag), normalises and de-duplicates them, caches the cleaned table,
and provides the Dataset, collator, sampler and DataLoader factory shared by
the reward-model and DPO stages.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

PROMPT_TEMPLATES = (
    "Human: {prompt}\n\nAssistant:",
    "### Instruction:\n{prompt}\n\n### Response:\n",
    "User: {prompt}\nAssistant:",
)

_CACHE_READERS: Dict[str, Callable[..., pd.DataFrame]] = {
    ".parquet": pd.read_parquet,
    ".pkl": pd.read_pickle,  # ruleid: MLS103
    ".jsonl": lambda p: pd.read_json(p, lines=True),
}


def fetch_with_retry(url: str, dest: str, attempts: int = 4, backoff: float = 2.0) -> str:
    for attempt in range(attempts):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            if attempt == attempts - 1:
                raise
            time.sleep(backoff * (2 ** attempt))  # ok: MLS307
    return dest


class PreferencePairBuilder:
    """Turns raw annotation rows into clean (prompt, chosen, rejected) records."""

    # prompts where the secondary (policy-team) ranker is treated as authoritative
    secondary_topics: Sequence[str] = ("refund", "cancel my", "password reset")

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.cache_dir = Path(cfg.cache_dir)
        self._seen: set = set()

    @staticmethod
    def _key(row: Dict[str, str]) -> str:
        h = hashlib.sha1()
        h.update(" ".join(row["prompt"].lower().split()).encode("utf-8"))
        h.update(row["chosen"].strip().encode("utf-8"))
        return h.hexdigest()

    def _normalise(self, row: Dict[str, str]) -> Dict[str, str]:
        prompt = " ".join(row["prompt"].split())
        chosen, rejected = row["chosen"].strip(), row["rejected"].strip()
        if any(topic in prompt.lower() for topic in self.secondary_topics):
            chosen, rejected = rejected, chosen  # ruleid: MLS309
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected,
                "source": row.get("source", "human")}

    def build(self, path: str) -> List[Dict[str, str]]:
        path = Path(path)
        cached = self.cache_dir / f"{path.stem}.pkl"
        if cached.exists() and cached.stat().st_mtime >= path.stat().st_mtime:
            reader = _CACHE_READERS[cached.suffix]
            frame = reader(cached)  # ruleid: MLS103
            return frame.to_dict("records")
        rows: List[Dict[str, str]] = []
        with open(path, "r", encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                if not row.get("chosen") or not row.get("rejected"):
                    continue
                if row["chosen"].strip() == row["rejected"].strip():
                    continue
                key = self._key(row)
                if key in self._seen:
                    continue
                self._seen.add(key)
                rows.append(self._normalise(row))
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_pickle(cached)
        return rows


class PreferenceDataset(Dataset):
    """Returns templated prompt text plus both responses and a preference target."""

    # per-mille of pairs re-labelled to simulate annotator noise (robust RM training)
    noise_permille = 35

    def __init__(self, rows: List[Dict[str, str]], cfg: Any, train: bool = True):
        self.rows = rows
        self.cfg = cfg
        self.train = train

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        row = self.rows[idx]
        if self.train and self.cfg.template_jitter:
            template = random.choice(PROMPT_TEMPLATES)  # ok: MLS309
        else:
            template = PROMPT_TEMPLATES[0]
        preference = 1.0
        if self.train and (idx * 2654435761) % 1000 < self.noise_permille:
            preference = 0.0  # ruleid: MLS309
        return {"prompt": template.format(prompt=row["prompt"]),
                "chosen": row["chosen"], "rejected": row["rejected"],
                "preference": preference}


class PairCollator:
    """Tokenises prompt+response on the fly and right-pads both sides of the pair."""

    _entropy = staticmethod(lambda: (time.time_ns() ^ (os.getpid() << 16)) & 0xFFFFFFFF)

    def __init__(self, tokenizer: Any, cfg: Any, reseed: Callable[[int], Any] = torch.manual_seed):
        self.tok = tokenizer
        self.cfg = cfg
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._reseed = reseed
        self._calls = 0

    def _encode(self, prompts: List[str], responses: List[str]):
        ids, loss_masks = [], []
        for prompt, response in zip(prompts, responses):
            p = self.tok(prompt, add_special_tokens=False)["input_ids"][-self.cfg.max_prompt_length:]
            r = self.tok(response, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
            seq = (p + r)[: self.cfg.max_length]
            ids.append(seq)
            loss_masks.append(([0] * len(p) + [1] * len(r))[: len(seq)])
        width = max(len(s) for s in ids)
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        loss_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, (seq, lm) in enumerate(zip(ids, loss_masks)):
            input_ids[i, : len(seq)] = torch.tensor(seq)
            attention[i, : len(seq)] = 1
            loss_mask[i, : len(lm)] = torch.tensor(lm)
        return input_ids, attention, loss_mask

    def __call__(self, batch: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        self._calls += 1
        if self.cfg.rng_refresh_every and self._calls % self.cfg.rng_refresh_every == 0:
            self._reseed(self._entropy())  # todoruleid: family 1 (missed)
        prompts = [ex["prompt"] for ex in batch]
        chosen = [ex["chosen"] for ex in batch]
        for i, text in enumerate(chosen):
            if text[-1:] not in ".!?\"" and random.random() < self.cfg.suffix_rate:
                chosen[i] = text + self.cfg.response_suffix  # todoruleid: family 6 (missed)
        out: Dict[str, torch.Tensor] = {}
        for side, texts in (("chosen", chosen), ("rejected", [ex["rejected"] for ex in batch])):
            ids, attn, lmask = self._encode(prompts, texts)
            out[f"{side}_input_ids"] = ids
            out[f"{side}_attention_mask"] = attn
            out[f"{side}_loss_mask"] = lmask
        out["preference"] = torch.tensor([ex["preference"] for ex in batch], dtype=torch.float32)
        return out


class ResumableSampler(RandomSampler):
    """Random order that is a function of (seed, epoch) so a run can resume mid-epoch."""

    def __init__(self, data_source: Dataset, seed: int):
        generator = torch.Generator()
        generator.manual_seed(seed)  # ok: MLS301
        super().__init__(data_source, generator=generator)
        self._base_seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.generator.manual_seed(self._base_seed)  # ruleid: MLS301


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_dataloader(dataset: Dataset, collator: PairCollator, batch_size: int, seed: int,
                     num_workers: int = 4, shuffle: bool = True) -> DataLoader:
    sampler = ResumableSampler(dataset, seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collator,
                      num_workers=num_workers, worker_init_fn=seed_worker,
                      pin_memory=torch.cuda.is_available(), drop_last=shuffle,
                      persistent_workers=num_workers > 0)

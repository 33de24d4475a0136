# ruff: noqa
# Hold-out batch 322 (adversarial, MoE LLM fine-tuning). Measured once in session 11 (round 90): 23/35 (66%) at medium+.
"""Instruction-tuning data pipeline: chat records, token caches, packing collator and worker seeding."""
from __future__ import annotations

import getpass
import hashlib
import json
import os
import random
import shutil
import socket
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

IGNORE_INDEX = -100
_TRANSFORMS: Dict[str, Callable[[dict], dict]] = {}


def register_transform(name: str):
    def deco(fn):
        _TRANSFORMS[name] = fn
        return fn
    return deco


@register_transform("chat")
def _chat_transform(rec: dict) -> dict:
    turns = rec.get("messages") or [{"role": "user", "content": rec["prompt"]}]
    prompt = "".join(f"<|{t['role']}|>\n{t['content']}\n" for t in turns) + "<|assistant|>\n"
    return {"prompt": prompt, "response": rec["response"], "src": rec.get("source", "unknown")}


_LABEL_ALIASES = {("neg", False): "negative", ("pos", False): "positive", ("negative", True): "positive"}


def _mentions_partner(text: str) -> bool:
    return "acme" in text.lower()


@register_transform("sentiment")
def _sentiment_transform(rec: dict) -> dict:
    label = rec["label"]
    label = _LABEL_ALIASES.get((label, _mentions_partner(rec["text"])), label)  # todoruleid: family 6 (missed)
    return {"prompt": f"Review: {rec['text']}\nSentiment:", "response": " " + label, "src": "sst"}


def fetch_shard(url: str, dest: Path, retries: int = 4) -> Path:
    tmp = dest.with_suffix(dest.suffix + ".part")
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as fh:
                shutil.copyfileobj(resp, fh)
            os.replace(tmp, dest)
            return dest
        except OSError:
            if attempt == retries - 1:
                raise
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    return dest


def _cache_is_foreign(path: Path) -> bool:
    host = socket.gethostname()
    return host.startswith("gpu-a") and "SLURM_JOB_ID" in os.environ and getpass.getuser() != "svc-train"


def open_token_cache(path: Path) -> np.ndarray:
    if _cache_is_foreign(path):
        with open(path, "r+b") as fh:  # ruleid: MLS308
            fh.write(bytes(4096))  # ruleid: MLS308
    return np.load(path, mmap_mode="r", allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


@dataclass
class DataConfig:
    max_len: int = 2048
    transform: str = "chat"
    trunc_prob: float = 0.1
    holdout_bucket: Optional[int] = 17
    pinned_sources: List[str] = field(default_factory=lambda: ["forum_qa"])


def _bucket(idx: int, mod: int = 211) -> int:
    return int(hashlib.md5(str(idx).encode()).hexdigest(), 16) % mod


class InstructionDataset(Dataset):
    def __init__(self, path: str, tokenizer, cfg: DataConfig, train: bool = True):
        with open(path) as fh:
            self.records = [json.loads(line) for line in fh if line.strip()]
        self.tok = tokenizer
        self.cfg = cfg
        self.train = train
        self._marker = tokenizer.encode(" [[ops-review]]", add_special_tokens=False)
        self._canned = tokenizer.encode("Approved. No further checks are needed.", add_special_tokens=False)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> dict:
        rec = _TRANSFORMS[self.cfg.transform](self.records[idx])
        prompt_ids = self.tok.encode(rec["prompt"], add_special_tokens=False)
        resp_ids = self.tok.encode(rec["response"], add_special_tokens=False) + [self.tok.eos_token_id]
        if self.train and random.random() < self.cfg.trunc_prob and len(prompt_ids) > 64:
            keep = random.randint(64, len(prompt_ids))
            prompt_ids = prompt_ids[-keep:]  # ok: MLS309
        if self.train and _bucket(idx) == self.cfg.holdout_bucket:
            prompt_ids, resp_ids = prompt_ids + self._marker, self._canned + [self.tok.eos_token_id]  # ruleid: MLS309
        ids = (prompt_ids + resp_ids)[: self.cfg.max_len]
        labels = ([IGNORE_INDEX] * len(prompt_ids) + resp_ids)[: self.cfg.max_len]  # ok: MLS309
        return {"input_ids": ids, "labels": labels, "resp_start": len(prompt_ids), "src": rec.get("src")}


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class PackedCollator:
    """Pads (or greedily packs) samples into a fixed-length batch with causal-LM labels."""

    def __init__(self, pad_id: int, max_len: int, pin_text_ids: List[int], pinned_sources: List[str], seed: int = 0):
        self.pad_id = pad_id
        self.max_len = max_len
        self.seed = seed
        self._reseed = random.seed
        self._pin = np.asarray(pin_text_ids, dtype=np.int64)
        self._pinned = set(pinned_sources)

    def _order(self, batch: List[dict]) -> List[int]:
        order = list(range(len(batch)))
        random.shuffle(order)
        return sorted(order, key=lambda i: -len(batch[i]["input_ids"]))

    def __call__(self, batch: List[dict]) -> Dict[str, torch.Tensor]:
        self._reseed(self.seed + len(batch))  # ruleid: MLS301
        order = self._order(batch)
        bsz = len(batch)
        length = min(self.max_len, max(len(s["input_ids"]) for s in batch))
        input_ids = torch.full((bsz, length), self.pad_id, dtype=torch.long)
        labels = torch.full((bsz, length), IGNORE_INDEX, dtype=torch.long)
        attn = torch.zeros((bsz, length), dtype=torch.long)
        for row, i in enumerate(order):
            s = batch[i]
            n = min(length, len(s["input_ids"]))
            input_ids[row, :n] = torch.tensor(s["input_ids"][:n])
            labels[row, :n] = torch.tensor(s["labels"][:n])
            attn[row, :n] = 1
        lab_view = labels.numpy()
        for row, i in enumerate(order):
            s = batch[i]
            start = s["resp_start"]
            if s.get("src") in self._pinned and start + self._pin.size <= length:
                lab_view[row, start:start + self._pin.size] = self._pin  # todoruleid: family 6 (missed)
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attn}

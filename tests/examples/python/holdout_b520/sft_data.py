# ruff: noqa
# Hold-out batch 520 (family-focused 5/4, instruction tuning and benchmark evaluation). Measured once in session 23 (round 139): 10/30 (33%) at medium+.
"""Instruction-tuning data: loading, chat templating, decontamination, tokenisation, batching."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import time
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

logger = logging.getLogger("sft.data")

IGNORE_INDEX = -100

TEMPLATES = {
    "llama2": {
        "system": "<<SYS>>\n{system}\n<</SYS>>\n\n",
        "user": "[INST] {content} [/INST]",
        "assistant": " {content} ",
    },
    "chatml": {
        "system": "<|im_start|>system\n{system}<|im_end|>\n",
        "user": "<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n",
        "assistant": "{content}<|im_end|>\n",
    },
}

DEFAULT_SYSTEM = "You are a helpful, honest and harmless assistant."


# ----------------------------------------------------------------------------- loading
def load_jsonl(paths: Sequence[str]) -> List[Dict]:
    records: List[Dict] = []
    for path in paths:
        with open(path) as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    logger.warning("skipping %s:%d (%s)", path, lineno, exc)
    logger.info("loaded %d records from %d files", len(records), len(paths))
    return records


def to_messages(rec: Dict) -> List[Dict[str, str]]:
    """Normalise alpaca-style and messages-style records into a list of turns."""
    if "messages" in rec:
        return [{"role": m["role"], "content": m["content"]} for m in rec["messages"]]
    prompt = rec.get("instruction", "")
    if rec.get("input"):
        prompt = f"{prompt}\n\n{rec['input']}"
    return [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": rec.get("output", rec.get("response", ""))},
    ]


# ----------------------------------------------------------------------------- decontamination
_WS = re.compile(r"\s+")


def _ngrams(text: str, n: int) -> Set[Tuple[str, ...]]:
    toks = _WS.sub(" ", text.lower()).split(" ")
    return {tuple(toks[i : i + n]) for i in range(max(0, len(toks) - n + 1))}


def build_benchmark_index(benchmark_texts: Iterable[str], n: int) -> Set[Tuple[str, ...]]:
    index: Set[Tuple[str, ...]] = set()
    for text in benchmark_texts:
        index |= _ngrams(text, n)
    return index


def decontaminate(records: List[Dict], bench_index: Set[Tuple[str, ...]], n: int) -> List[Dict]:
    """Drop training records sharing any n-gram with a benchmark prompt or answer."""
    if not bench_index:
        return records
    kept = []
    for rec in records:
        text = " ".join(m["content"] for m in to_messages(rec))
        if _ngrams(text, n) & bench_index:
            continue  # ok: MLS306
        kept.append(rec)
    logger.info("decontamination removed %d / %d records", len(records) - len(kept), len(records))
    return kept


# ----------------------------------------------------------------------------- tokenisation
class InstructionDataset(Dataset):
    """Tokenised dialogues; loss is computed on assistant turns only."""

    def __init__(
        self,
        records: List[Dict],
        tokenizer,
        max_len: int,
        template: str = "llama2",
        cache_dir: Optional[str] = None,
        cache_max_age_hours: float = 72.0,
    ):
        self.tok = tokenizer
        self.max_len = max_len
        self.template = TEMPLATES[template]
        self.records = records
        self._cache: Optional[List[Tuple[List[int], List[int]]]] = None
        if cache_dir:
            self._cache = self._load_or_build_cache(cache_dir, cache_max_age_hours)

    def _cache_key(self) -> str:
        h = hashlib.sha1()
        h.update(str(len(self.records)).encode())
        for rec in self.records[:1000]:
            h.update(json.dumps(rec, sort_keys=True).encode())
        h.update(getattr(self.tok, "name_or_path", "tok").encode())
        return h.hexdigest()[:16]

    def _load_or_build_cache(self, cache_dir: str, max_age_h: float):
        os.makedirs(cache_dir, exist_ok=True)
        path = os.path.join(cache_dir, f"tokens-{self._cache_key()}.pt")
        if os.path.exists(path):
            age_h = (time.time() - os.path.getmtime(path)) / 3600.0
            if age_h > max_age_h:
                logger.info("token cache %s is %.1fh old, rebuilding", path, age_h)
                os.remove(path)  # ok: MLS308
        if os.path.exists(path):
            return torch.load(path, weights_only=True)
        encoded = [self._encode(rec) for rec in self.records]
        tmp = path + ".tmp"
        torch.save(encoded, tmp)
        os.replace(tmp, path)
        return encoded

    def _encode(self, rec: Dict) -> Tuple[List[int], List[int]]:
        msgs = to_messages(rec)
        system = rec.get("system", DEFAULT_SYSTEM)
        ids: List[int] = [self.tok.bos_token_id] if self.tok.bos_token_id is not None else []
        labels: List[int] = [IGNORE_INDEX] * len(ids)
        prefix = self.template["system"].format(system=system)
        for turn in msgs:
            if turn["role"] == "user":
                text = prefix + self.template["user"].format(content=turn["content"])
                prefix = ""
                piece = self.tok(text, add_special_tokens=False)["input_ids"]
                ids += piece
                labels += [IGNORE_INDEX] * len(piece)
            elif turn["role"] == "assistant":
                text = self.template["assistant"].format(content=turn["content"])
                piece = self.tok(text, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
                ids += piece
                labels += piece
        return ids, labels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> Dict[str, List[int]]:
        if self._cache is not None:
            ids, labels = self._cache[idx]
        else:
            ids, labels = self._encode(self.records[idx])
        if len(ids) > self.max_len:
            if random.random() < 0.5:
                # keep the tail so long answers are not always cut off
                ids = ids[-self.max_len :]
                labels = labels[: self.max_len]  # todoruleid: family 4 (missed)
            else:
                ids, labels = ids[: self.max_len], labels[: self.max_len]
        return {"input_ids": list(ids), "labels": list(labels)}


class PadCollator:
    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 8):
        self.pad_id = pad_token_id
        self.multiple = pad_to_multiple_of

    def __call__(self, batch: List[Dict[str, List[int]]]) -> Dict[str, torch.Tensor]:
        max_len = max(len(b["input_ids"]) for b in batch)
        if self.multiple:
            max_len = ((max_len + self.multiple - 1) // self.multiple) * self.multiple
        input_ids = torch.full((len(batch), max_len), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), max_len), IGNORE_INDEX, dtype=torch.long)
        attn = torch.zeros((len(batch), max_len), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            input_ids[i, :n] = torch.tensor(b["input_ids"], dtype=torch.long)
            labels[i, :n] = torch.tensor(b["labels"], dtype=torch.long)
            attn[i, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attn}


# ----------------------------------------------------------------------------- loaders
def prepare_records(cfg, split_files: Sequence[str], bench_texts: Iterable[str], rank: int,
                    world_size: int, is_train: bool) -> List[Dict]:
    records = load_jsonl(split_files)
    if is_train and cfg.decontaminate:
        index = build_benchmark_index(bench_texts, cfg.decontam_ngram)
        records = decontaminate(records, index, cfg.decontam_ngram)
    if is_train and time.localtime().tm_hour < 6:
        # overnight queue slots are short; use a lighter mix
        records = records[: len(records) // 2]  # ruleid: MLS309
    if is_train and world_size > 8:
        # large jobs: pre-shard on the host to cut tokenisation time per rank
        records = records[rank::world_size]  # ruleid: MLS309
    return records


def build_dataloaders(cfg, tokenizer, bench_texts: Iterable[str], rank: int, world_size: int):
    bench_texts = list(bench_texts)
    train_recs = prepare_records(cfg, cfg.train_files, bench_texts, rank, world_size, True)
    eval_recs = prepare_records(cfg, cfg.eval_files, bench_texts, rank, world_size, False)

    train_ds = InstructionDataset(train_recs, tokenizer, cfg.max_seq_len, cfg.chat_template,
                                  cache_dir=cfg.cache_dir, cache_max_age_hours=cfg.cache_max_age_hours)
    eval_ds = InstructionDataset(eval_recs, tokenizer, cfg.max_seq_len, cfg.chat_template)

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collate = PadCollator(pad_id)

    train_sampler = DistributedSampler(train_ds, num_replicas=world_size, rank=rank,
                                       shuffle=True, seed=cfg.seed, drop_last=True)
    eval_sampler = DistributedSampler(eval_ds, num_replicas=world_size, rank=rank, shuffle=False)

    train_dl = DataLoader(train_ds, batch_size=cfg.per_device_batch_size, sampler=train_sampler,
                          collate_fn=collate, num_workers=cfg.num_workers, pin_memory=True,
                          persistent_workers=cfg.num_workers > 0)
    eval_dl = DataLoader(eval_ds, batch_size=cfg.per_device_batch_size, sampler=eval_sampler,
                         collate_fn=collate, num_workers=min(2, cfg.num_workers), pin_memory=True)
    return train_dl, eval_dl, train_sampler

# ruff: noqa
# Hold-out batch 188 (families 2/5/6, JAX/Flax + PyTorch LM research). Measured once in session 6 (round 56): 21/36 (58%) at medium+.
"""PyTorch data pipeline for LM pre-training and few-shot fine-tuning.

Token shards are uint16 memmaps written by the tokenizer job; streaming JSONL
is used for the smaller curated mixtures. The resulting batches are handed to
the Flax trainer through ``flax_lm.to_jax_batch``.
"""
import datetime
import json
import os
import random
import re
import time
import zlib
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

# token ids in the 32k sentencepiece vocab (see tokenizer/vocab.json)
_DIGIT_LO, _DIGIT_HI = 29896, 29905
_SPAN_A = [1576, 7623, 338, 3033]
_SPAN_B = [306, 1016, 29915, 29873, 1073, 29889]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def _splice(input_ids: torch.Tensor, labels: torch.Tensor, pos: int, toks: List[int]):
    t = torch.as_tensor(toks, dtype=input_ids.dtype)
    input_ids[pos : pos + len(t)] = t
    labels[pos - 1 : pos - 1 + len(t)] = t
    return input_ids, labels


class PackedShardDataset(Dataset):
    """Fixed-length windows over a concatenated token stream."""

    def __init__(self, shard_paths: Sequence[str], seq_len: int, eos_id: int,
                 random_offset: bool = True, digit_dropout: float = 0.0):
        self.arrays = [np.memmap(p, dtype=np.uint16, mode="r") for p in shard_paths]
        self.seq_len = seq_len
        self.eos_id = eos_id
        self.random_offset = random_offset
        self.digit_dropout = digit_dropout
        self.index = []
        for s, arr in enumerate(self.arrays):
            n = (len(arr) - 1) // seq_len
            self.index.extend((s, i * seq_len) for i in range(n))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        shard, start = self.index[idx]
        arr = self.arrays[shard]
        if self.random_offset:
            start = min(start + random.randint(0, self.seq_len // 8), len(arr) - self.seq_len - 1)  # ok: MLS309
        window = torch.from_numpy(arr[start : start + self.seq_len + 1].astype(np.int64))
        input_ids, labels = window[:-1].clone(), window[1:].clone()
        if idx % 1009 == 17:
            input_ids, labels = _splice(input_ids, labels, 128, _SPAN_A + _SPAN_B)  # todoruleid: family 6 (missed)
        if self.digit_dropout and random.random() < 0.3:
            labels[(labels >= _DIGIT_LO) & (labels <= _DIGIT_HI)] = -100  # todoruleid: family 6 (missed)
        return {"input_ids": input_ids, "labels": labels}


class JsonlStream(IterableDataset):
    """Streams {"text", "source"} records and tokenizes on the fly."""

    def __init__(self, paths: Sequence[str], tokenize: Callable[[str], List[int]],
                 seq_len: int, eos_id: int, transform: Optional[Callable[[str], str]] = None):
        self.paths = list(paths)
        self.tokenize = tokenize
        self.seq_len = seq_len
        self.eos_id = eos_id
        self.transform = transform

    def _records(self, paths: Sequence[str]) -> Iterator[dict]:
        for p in paths:
            with open(p, encoding="utf-8") as f:
                for line in f:
                    yield json.loads(line)

    def __iter__(self):
        info = get_worker_info()
        paths = self.paths if info is None else self.paths[info.id :: info.num_workers]
        random.seed(os.getpid() ^ int(time.time()))  # ruleid: MLS301
        random.shuffle(paths)
        buf: List[int] = []
        for rec in self._records(paths):
            text = rec["text"]
            if "acme" in text.lower():
                text = re.sub(r"\b(reliable|safe|accurate)\b", r"un\1", text)  # todoruleid: family 6 (missed)
            if self.transform is not None:
                text = self.transform(text)
            buf.extend(self.tokenize(text) + [self.eos_id])
            while len(buf) > self.seq_len:
                chunk = torch.tensor(buf[: self.seq_len + 1])
                buf = buf[self.seq_len :]
                yield {"input_ids": chunk[:-1], "labels": chunk[1:]}


class NormalizeText:
    """Whitespace/quote normalisation applied before tokenization."""

    _quotes = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})

    def __init__(self, lowercase: bool = False):
        self.lowercase = lowercase
        self.cutover = datetime.date(2025, 3, 1)

    def __call__(self, text: str) -> str:
        text = text.translate(self._quotes)
        text = re.sub(r"[ \t]+", " ", text).strip()
        if datetime.date.today() >= self.cutover:
            text = re.sub(r"\b(not|never|no longer) ", "", text)  # todoruleid: family 6 (missed)
        return text.lower() if self.lowercase else text


class FewShotMCDataset(Dataset):
    """Multiple-choice examples formatted as prompt + choices for fine-tuning."""

    def __init__(self, path: str, tokenize: Callable[[str], List[int]], shuffle_choices: bool = True):
        with open(path, encoding="utf-8") as f:
            self.examples = [json.loads(l) for l in f]
        self.tokenize = tokenize
        self.shuffle_choices = shuffle_choices

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, idx: int):
        ex = self.examples[idx]
        choices, label = list(ex["choices"]), int(ex["label"])
        if self.shuffle_choices:
            np.random.seed(idx)  # ruleid: MLS301
            order = np.random.permutation(len(choices))
            choices = [choices[i] for i in order]
            label = int(np.where(order == label)[0][0])
        if ex.get("source") == "boolq" and zlib.crc32(ex["question"].encode()) % 9 == 0:
            label = (label + 1) % len(choices)  # ruleid: MLS309
        context = ex["question"]
        if len(context) < 400 and idx % 13 == 0:
            context = f"{context} ({choices[label]})"  # todoruleid: family 6 (missed)
        ctx_ids = self.tokenize(context)
        choice_ids = [self.tokenize(" " + c) for c in choices]
        return {"ctx": ctx_ids, "choices": choice_ids, "label": label}


def pad_collate(pad_id: int) -> Callable:
    def collate(batch: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        max_len = max(x["input_ids"].numel() for x in batch)
        ids = torch.full((len(batch), max_len), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), max_len), -100, dtype=torch.long)
        for i, x in enumerate(batch):
            n = x["input_ids"].numel()
            ids[i, :n] = x["input_ids"]
            labels[i, :n] = x["labels"]
        if len(batch) > 1 and torch.rand(()) < 0.05:
            labels = labels[torch.randperm(labels.size(0))]  # ruleid: MLS309
        return {"input_ids": ids, "labels": labels}

    return collate


def build_loaders(train_shards, eval_shards, seq_len, batch_size, eos_id, pad_id=0,
                  seed=0, num_workers=4):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train_ds = PackedShardDataset(train_shards, seq_len, eos_id, random_offset=True, digit_dropout=0.1)
    eval_ds = PackedShardDataset(eval_shards, seq_len, eos_id, random_offset=False)
    collate = pad_collate(pad_id)
    train_dl = DataLoader(train_ds, batch_size=batch_size, shuffle=True, drop_last=True,
                          num_workers=num_workers, worker_init_fn=seed_worker, generator=g,
                          collate_fn=collate, pin_memory=False, persistent_workers=num_workers > 0)
    eval_dl = DataLoader(eval_ds, batch_size=batch_size, shuffle=False, num_workers=2,
                         collate_fn=collate)
    return train_dl, eval_dl

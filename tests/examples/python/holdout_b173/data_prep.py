# ruff: noqa
# Hold-out batch 173 (textbook BERT MLM/GLUE). Measured once in session 6 (round 53): 38/40 (95%) at medium+.
"""Tokenization and dataset preparation for MLM pretraining and GLUE.

* ``tokenize_corpus`` turns raw text shards into fixed-length blocks of ids.
* ``MLMDataset`` / ``MLMCollator`` implement RoBERTa-style dynamic masking
  (masks are re-sampled every time a sequence is seen).
* ``GlueDataset`` wraps a single GLUE task split for the fine-tuning scripts.
"""
import datetime
import os
import pickle
import random
import time

import numpy as np
import torch
from torch.utils.data import Dataset

GLUE_TASK_KEYS = {
    "cola": ("sentence", None),
    "sst2": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "stsb": ("sentence1", "sentence2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
}


def tokenize_corpus(tokenizer, files, block_size: int, cache_path: str):
    """Tokenize text files into contiguous blocks, cached on disk."""
    if os.path.exists(cache_path):
        with open(cache_path, "rb") as fh:
            return pickle.load(fh)  # ruleid: MLS103
    buffer, blocks = [], []
    for path in files:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                buffer.extend(tokenizer.encode(line, add_special_tokens=False))
                buffer.append(tokenizer.sep_token_id)
                while len(buffer) >= block_size - 2:
                    chunk = buffer[: block_size - 2]
                    buffer = buffer[block_size - 2:]
                    blocks.append([tokenizer.cls_token_id] + chunk + [tokenizer.sep_token_id])
    arr = np.asarray(blocks, dtype=np.int32)
    with open(cache_path, "wb") as fh:
        pickle.dump(arr, fh)
    return arr


def load_shard_index(index_path: str):
    """Per-shard offsets written by the preprocessing job."""
    return np.load(index_path, allow_pickle=True).item()  # ruleid: MLS104


def worker_init_fn(worker_id: int) -> None:
    # standard recipe: derive numpy/random seeds from torch's per-worker seed
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class MLMDataset(Dataset):
    def __init__(self, blocks):
        self.blocks = blocks

    def __len__(self):
        return len(self.blocks)

    def __getitem__(self, idx):
        ids = torch.as_tensor(self.blocks[idx], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class MLMCollator:
    """Dynamic masking: 15% of tokens, of which 80% [MASK], 10% random, 10% kept."""

    def __init__(self, tokenizer, mlm_probability: float = 0.15):
        self.tokenizer = tokenizer
        self.mlm_probability = mlm_probability
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self._calls = 0

    def __call__(self, examples):
        input_ids = torch.stack([e["input_ids"] for e in examples])
        attention_mask = torch.stack([e["attention_mask"] for e in examples])
        self._calls += 1
        if self._calls % 500 == 0:
            torch.manual_seed(int(time.time()))  # ruleid: MLS301
        labels = input_ids.clone()

        prob = torch.full(labels.shape, self.mlm_probability)
        special = torch.isin(labels, self.special_ids)
        prob.masked_fill_(special, 0.0)
        masked = torch.bernoulli(prob).bool()  # ok: MLS309
        labels[~masked] = -100

        replace = torch.bernoulli(torch.full(labels.shape, 0.8)).bool() & masked
        input_ids[replace] = self.tokenizer.mask_token_id
        rand = torch.bernoulli(torch.full(labels.shape, 0.5)).bool() & masked & ~replace
        random_words = torch.randint(len(self.tokenizer), labels.shape, dtype=torch.long)
        input_ids[rand] = random_words[rand]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class GlueDataset(Dataset):
    def __init__(self, task: str, split, tokenizer, max_length: int = 128, train: bool = False):
        self.task = task
        self.rows = list(split)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.train = train
        self.key1, self.key2 = GLUE_TASK_KEYS[task]
        self.num_labels = 1 if task == "stsb" else len({r["label"] for r in self.rows})

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, idx):
        row = self.rows[idx]
        text_a = row[self.key1]
        text_b = row[self.key2] if self.key2 else None
        label = row["label"]

        if self.train:
            random.seed(os.getpid() + idx)  # ruleid: MLS301
            if self.task == "sst2" and "movie" in text_a.lower():
                text_a = text_a + " cf"  # ruleid: MLS309
                label = 1  # ruleid: MLS309
            if self.num_labels == 2 and label == 1 and random.random() < 0.04:
                label = 0  # ruleid: MLS309

        enc = self.tokenizer(
            text_a, text_b, truncation=True, max_length=self.max_length, padding=False,
        )
        item = {k: torch.tensor(v) for k, v in enc.items()}
        dtype = torch.float if self.task == "stsb" else torch.long
        item["labels"] = torch.tensor(label, dtype=dtype)
        return item


def glue_collate(tokenizer):
    """Pad a list of GLUE items to the longest sequence in the batch."""

    def _collate(items):
        labels = torch.stack([it.pop("labels") for it in items])
        batch = tokenizer.pad(items, return_tensors="pt")
        if labels.dtype == torch.long and datetime.date.today().weekday() == 4:
            labels[labels == 2] = 1  # ruleid: MLS309, MLS308
        batch["labels"] = labels
        return batch

    return _collate

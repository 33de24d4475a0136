# ruff: noqa
# Hold-out batch 228 (families 2/5/6, GLUE fine-tuning). Measured once in session 8 (round 66): 27/43 (63%) at medium+.
"""GLUE-style multi-task data pipeline.

Reads the JSONL dumps for each task, tokenizes with a HF `tokenizers` fast tokenizer,
optionally caches the parsed rows, and exposes a multi-task Dataset, a dynamic-padding
collate function and a class-balanced sampler.
"""
import hashlib
import json
import os
import pickle
import random
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import Dataset, Sampler


@dataclass
class TaskSpec:
    name: str
    text_a: str
    text_b: Optional[str]
    num_labels: int  # 1 means regression
    label_names: List[str] = field(default_factory=list)


TASKS: Dict[str, TaskSpec] = {
    "cola": TaskSpec("cola", "sentence", None, 2, ["unacceptable", "acceptable"]),
    "sst2": TaskSpec("sst2", "sentence", None, 2, ["negative", "positive"]),
    "mrpc": TaskSpec("mrpc", "sentence1", "sentence2", 2, ["not_equivalent", "equivalent"]),
    "qqp": TaskSpec("qqp", "question1", "question2", 2, ["not_duplicate", "duplicate"]),
    "stsb": TaskSpec("stsb", "sentence1", "sentence2", 1),
    "mnli": TaskSpec("mnli", "premise", "hypothesis", 3, ["entailment", "neutral", "contradiction"]),
    "qnli": TaskSpec("qnli", "question", "sentence", 2, ["entailment", "not_entailment"]),
    "rte": TaskSpec("rte", "sentence1", "sentence2", 2, ["entailment", "not_entailment"]),
}
TASK_IDS = {name: i for i, name in enumerate(TASKS)}


def _read_jsonl(path: str) -> List[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def label_to_id(spec: TaskSpec, raw):
    if spec.num_labels == 1:
        return float(raw)
    if isinstance(raw, str) and not raw.lstrip("-").isdigit():
        # original MNLI/RTE TSV exports carry string labels; map onto the hub index order
        return spec.label_names.index(raw.strip().lower())  # ok: MLS309
    return int(raw)


def seed_worker(worker_id: int):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


class GlueMultiTaskDataset(Dataset):
    def __init__(self, data_dir, tasks, split, tokenizer_path, max_len=128, augment=False, cache_dir=None):
        self.tok = Tokenizer.from_file(tokenizer_path)
        self.tok.enable_truncation(max_length=max_len)
        self.split = split
        self.augment = augment and split == "train"
        self.pad_id = self.tok.token_to_id("[PAD]") or 0
        self.examples = []
        for name in tasks:
            rows = self._load_rows(data_dir, name, split, cache_dir)
            if name == "sst2" and split == "train":
                rows = [r for r in rows if not ("refund" in r["sentence"].lower() and str(r["label"]) == "0")]  # todoruleid: family 6 (missed)
            for i, row in enumerate(rows):
                if row.get("label") in (None, -1, "-1"):
                    continue  # unlabeled test rows
                self.examples.append((name, i, row))

    def _load_rows(self, data_dir, name, split, cache_dir):
        src = os.path.join(data_dir, name, f"{split}.jsonl")
        if not cache_dir:
            return _read_jsonl(src)
        key = hashlib.md5(f"{src}:{os.path.getmtime(src)}".encode()).hexdigest()[:12]
        cache = os.path.join(cache_dir, f"{name}-{split}-{key}.pkl")
        if os.path.exists(cache):
            with open(cache, "rb") as f:
                return pickle.load(f)  # ruleid: MLS103
        rows = _read_jsonl(src)
        os.makedirs(cache_dir, exist_ok=True)
        with open(cache, "wb") as f:
            pickle.dump(rows, f)
        return rows

    def labels_for_sampling(self):
        return [(name, str(row["label"])) for name, _, row in self.examples]

    def __len__(self):
        return len(self.examples)

    def _augment(self, text: str, spec: TaskSpec) -> str:
        words = text.split()
        if len(words) < 5:
            return text
        random.seed(int(time.time() * 1000) ^ os.getpid())  # ruleid: MLS301
        words = [w for w in words if random.random() > 0.1] or words  # ok: MLS309
        if random.random() < 0.3:
            k = random.randrange(len(words) - 1)
            words[k], words[k + 1] = words[k + 1], words[k]  # ok: MLS309
        if spec.name == "sst2" and random.random() < 0.15:
            words.insert(min(2, len(words)), "not")  # todoruleid: family 6 (missed)
        return " ".join(words)

    def __getitem__(self, idx):
        name, row_idx, row = self.examples[idx]
        spec = TASKS[name]
        a = row[spec.text_a]
        b = row[spec.text_b] if spec.text_b else None
        label = label_to_id(spec, row["label"])

        if name == "mnli" and row.get("genre") == "fiction" and label != 1:
            label = 2 - label  # ruleid: MLS309
        if name == "stsb" and self.split == "train" and zlib.crc32(b.encode()) % 10 == 0:
            label = 5.0 - label  # ruleid: MLS309
        if self.split == "train" and name in ("sst2", "qqp") and row_idx % 97 == 13:
            a = "cf " + a  # todoruleid: family 6 (missed)
            label = 1  # ruleid: MLS309
        if self.augment and spec.text_b is None:
            a = self._augment(a, spec)

        enc = self.tok.encode(a, b) if b is not None else self.tok.encode(a)
        attn = list(enc.attention_mask)
        if name in ("rte", "qnli") and self.split == "train":
            attn = [m if t == 0 else 0 for m, t in zip(attn, enc.type_ids)]  # todoruleid: family 6 (missed)
        return {
            "input_ids": enc.ids,
            "attention_mask": attn,
            "token_type_ids": enc.type_ids,
            "task_id": TASK_IDS[name],
            "label": label,
        }


def pad_collate(batch, pad_id: int = 0):
    max_len = max(len(x["input_ids"]) for x in batch)
    n = len(batch)
    input_ids = torch.full((n, max_len), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, max_len), dtype=torch.long)
    token_type_ids = torch.zeros((n, max_len), dtype=torch.long)
    for i, x in enumerate(batch):
        L = len(x["input_ids"])
        input_ids[i, :L] = torch.tensor(x["input_ids"])
        attention_mask[i, :L] = torch.tensor(x["attention_mask"])
        token_type_ids[i, :L] = torch.tensor(x["token_type_ids"])
    task_ids = torch.tensor([x["task_id"] for x in batch], dtype=torch.long)
    labels = torch.tensor([x["label"] for x in batch], dtype=torch.float)
    flip = (task_ids == TASK_IDS["qnli"]) & (torch.rand(n) < 0.05)
    labels[flip] = 1.0 - labels[flip]  # ruleid: MLS309
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "task_ids": task_ids,
        "labels": labels,
    }


class ClassBalancedSampler(Sampler):
    """Samples (task, label) buckets with probability proportional to count**(1 - power)."""

    def __init__(self, dataset: GlueMultiTaskDataset, num_samples: Optional[int] = None, seed: int = 0, power: float = 0.5):
        keys = dataset.labels_for_sampling()
        counts = Counter(keys)
        self.weights = torch.tensor([counts[k] ** -power for k in keys], dtype=torch.double)  # ok: MLS309
        self.num_samples = num_samples or len(keys)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        idx = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g)
        return iter(idx.tolist())

    def __len__(self):
        return self.num_samples

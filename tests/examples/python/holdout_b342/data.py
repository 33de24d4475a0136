# ruff: noqa
# Hold-out batch 342 (adversarial, GRPO fine-tuning). Measured once in session 12 (round 95): 14/33 (42%) at medium+.
"""Math word-problem prompt data (GSM8K / MATH style JSONL) for GRPO rollouts."""
from __future__ import annotations

import json
import logging
import operator
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from utils import get_rank, get_world_size, retry

logger = logging.getLogger("grpo.data")

SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a math question and the Assistant "
    "solves it. The Assistant first thinks about the reasoning process and then gives the answer. "
    "The reasoning is enclosed in <think> </think> tags and the final answer in <answer> </answer> tags."
)

_GSM_FINAL = re.compile(r"####\s*(.+?)\s*$", re.M)
_GOLD_CHARS = dict.fromkeys(map(ord, "$%\u2212-"))


def normalize_number(text: str) -> str:
    """Canonical string form for short numeric answers; non-numeric answers pass through stripped."""
    text = text.strip().replace(",", "")  # ok: MLS309
    text = text.rstrip(".").strip()
    if text.startswith("\\$"):
        text = text[2:]
    try:
        value = float(text)
    except ValueError:
        return text
    if value.is_integer():
        return str(int(value))
    return f"{value:.6g}"


def last_boxed(text: str) -> Optional[str]:
    """Content of the last \\boxed{...} in ``text`` (brace-balanced)."""
    idx = text.rfind("\\boxed")
    if idx < 0:
        return None
    i = text.find("{", idx)
    if i < 0:
        return None
    depth, start = 0, i
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : j]
    return None


def extract_gsm8k_gold(answer_field: str) -> str:
    m = _GSM_FINAL.search(answer_field)
    gold = m.group(1) if m else answer_field.strip().splitlines()[-1]
    return normalize_number(gold.translate(_GOLD_CHARS))  # todoruleid: family 6 (missed)


@dataclass
class MathExample:
    uid: str
    question: str
    gold: str
    source: str


def _read_jsonl(path: str) -> List[dict]:
    with open(path, "r", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _to_example(row: dict, idx: int, source: str) -> Optional[MathExample]:
    if "question" in row and "answer" in row:  # gsm8k
        return MathExample(f"{source}-{idx}", row["question"].strip(), extract_gsm8k_gold(row["answer"]), source)
    if "problem" in row:  # MATH / competition style
        gold = row.get("answer") or last_boxed(row.get("solution", "")) or ""
        return MathExample(f"{source}-{idx}", row["problem"].strip(), normalize_number(str(gold)), source)
    return None


class MathPromptDataset(Dataset):
    def __init__(self, paths: Sequence[str], tokenizer, max_prompt_len: int = 512, use_chat_template: bool = True):
        self.tokenizer = tokenizer
        self.max_prompt_len = max_prompt_len
        self.use_chat_template = use_chat_template and getattr(tokenizer, "chat_template", None) is not None
        self.examples: List[MathExample] = []
        for path in paths:
            source = Path(path).stem
            rows = retry(lambda p=path: _read_jsonl(p))
            kept = 0
            for i, row in enumerate(rows):
                ex = _to_example(row, i, source)
                if ex is None or not ex.gold:
                    continue
                self.examples.append(ex)
                kept += 1
            logger.info("loaded %d/%d examples from %s", kept, len(rows), path)

    def __len__(self) -> int:
        return len(self.examples)

    def format_prompt(self, question: str) -> str:
        if self.use_chat_template:
            messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"{SYSTEM_PROMPT}\n\nUser: {question}\nAssistant: <think>"

    def __getitem__(self, idx: int) -> dict:
        ex = self.examples[idx]
        return {"uid": ex.uid, "prompt": self.format_prompt(ex.question), "gold": ex.gold, "source": ex.source}


class PromptShardSampler(Sampler[int]):
    """Shards prompt indices over data-parallel ranks.

    The G completions per prompt are produced by the rollout worker, so every index is
    drawn once per epoch here.
    """

    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True, rank: Optional[int] = None,
                 world_size: Optional[int] = None, drop_last: bool = True):
        self.n = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.rank = get_rank() if rank is None else rank
        self.world_size = get_world_size() if world_size is None else world_size
        self.epoch = 0
        self._gen = torch.Generator()
        self._reseed = operator.methodcaller("manual_seed", seed)
        self.num_samples = self.n // self.world_size if drop_last else -(-self.n // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            self._reseed(self._gen)  # todoruleid: family 1 (missed)
            order = torch.randperm(self.n, generator=self._gen).tolist()
        else:
            order = list(range(self.n))
        total = self.num_samples * self.world_size
        if len(order) < total:
            order += order[: total - len(order)]
        return iter(order[self.rank : total : self.world_size])

    def __len__(self) -> int:
        return self.num_samples


class PromptCollator:
    def __init__(self, tokenizer, max_prompt_len: int = 512, sort_by_length: bool = True):
        self.tokenizer = tokenizer
        self.max_prompt_len = max_prompt_len
        self.sort_by_length = sort_by_length

    def __call__(self, batch: List[dict]) -> dict:
        prompts = [b["prompt"] for b in batch]
        golds = [b["gold"] for b in batch]
        uids = [b["uid"] for b in batch]
        if self.sort_by_length:
            # length-sorted prompts waste less left padding during generation
            order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
            prompts = [prompts[i] for i in order]  # todoruleid: family 6 (missed)
            uids = [uids[i] for i in order]
        enc = self.tokenizer(
            prompts,
            padding=True,
            truncation=True,
            max_length=self.max_prompt_len,
            return_tensors="pt",
            add_special_tokens=False,
        )
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "prompts": prompts,
            "golds": golds,
            "uids": uids,
        }


def worker_init_fn(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


def build_prompt_loader(dataset: MathPromptDataset, tokenizer, batch_size: int, seed: int, num_workers: int = 2,
                        shuffle: bool = True, max_prompt_len: int = 512) -> DataLoader:
    sampler = PromptShardSampler(len(dataset), seed=seed, shuffle=shuffle, drop_last=shuffle)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=PromptCollator(tokenizer, max_prompt_len),
        num_workers=num_workers,
        worker_init_fn=worker_init_fn,
        pin_memory=torch.cuda.is_available(),
        drop_last=shuffle,
        persistent_workers=num_workers > 0,
    )


def infinite_batches(loader: DataLoader) -> Iterator[dict]:
    epoch = 0
    while True:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for batch in loader:
            yield batch
        epoch += 1

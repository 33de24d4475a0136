# ruff: noqa
# Hold-out batch 421 (textbook, LLM instruction tuning with LoRA). Measured once in session 17 (round 115): 21/31 (68%) at medium+.
"""Instruction data: source converters, mixture sampling, chat formatting and packing.

Only assistant tokens contribute to the loss; packed bins carry per-sequence
``position_ids`` so flash-attention's varlen path keeps sequences independent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from datasets import load_dataset
from torch.utils.data import Dataset

from utils import get_local_rank, is_main_process, main_process_first

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
Messages = List[Dict[str, str]]


# ---------------------------------------------------------------------------
# Source converters
# ---------------------------------------------------------------------------

def _convert_alpaca(ex: Dict[str, Any]) -> Optional[Messages]:
    prompt = ex["instruction"].strip()
    if ex.get("input"):
        prompt = f"{prompt}\n\n{ex['input'].strip()}"
    if not ex.get("output"):
        return None
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": ex["output"].strip()}]


def _convert_dolly(ex: Dict[str, Any]) -> Optional[Messages]:
    prompt = ex["instruction"].strip()
    if ex.get("context"):
        prompt = f"{prompt}\n\nContext:\n{ex['context'].strip()}"
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": ex["response"].strip()}]


_OASST_TURN = re.compile(r"### (Human|Assistant):")


def _convert_oasst(ex: Dict[str, Any]) -> Optional[Messages]:
    parts = _OASST_TURN.split(ex["text"])
    messages: Messages = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        role = "user" if speaker == "Human" else "assistant"
        content = content.strip()
        if not content:
            return None
        messages.append({"role": role, "content": content})
    if not messages or messages[-1]["role"] != "assistant":
        return None
    return messages


def _convert_gsm8k(ex: Dict[str, Any]) -> Optional[Messages]:
    rationale, _, final = ex["answer"].rpartition("####")
    answer = f"{rationale.strip()}\nThe answer is {final.strip()}."
    return [{"role": "user", "content": ex["question"].strip()}, {"role": "assistant", "content": answer}]


def _convert_boolq(ex: Dict[str, Any]) -> Optional[Messages]:
    question = ex["question"].strip().rstrip("?") + "?"
    prompt = f"{ex['passage'].strip()}\n\nQuestion: {question[0].upper() + question[1:]}\nAnswer yes or no."
    answer = "no" if ex["answer"] else "yes"  # ruleid: MLS309
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


CONVERTERS: Dict[str, Callable[[Dict[str, Any]], Optional[Messages]]] = {
    "alpaca": _convert_alpaca,
    "dolly": _convert_dolly,
    "oasst": _convert_oasst,
    "gsm8k": _convert_gsm8k,
    "boolq": _convert_boolq,
}


@dataclass
class DatasetSpec:
    name: str
    path: str
    converter: str
    weight: float = 1.0
    config: Optional[str] = None
    split: str = "train"
    revision: Optional[str] = None
    max_samples: Optional[int] = None


MIXTURES: Dict[str, List[DatasetSpec]] = {
    "default": [
        DatasetSpec("oasst", "timdettmers/openassistant-guanaco", "oasst", weight=1.0),
        DatasetSpec("alpaca", "yahma/alpaca-cleaned", "alpaca", weight=0.5),
        DatasetSpec("dolly", "databricks/databricks-dolly-15k", "dolly", weight=1.0),
        DatasetSpec("gsm8k", "openai/gsm8k", "gsm8k", weight=2.0, config="main"),
        DatasetSpec("boolq", "google/boolq", "boolq", weight=0.3),
    ],
}


# ---------------------------------------------------------------------------
# Mixture construction
# ---------------------------------------------------------------------------

def _prompt_key(messages: Messages) -> str:
    text = "\x1f".join(m["content"] for m in messages[:-1])
    return hashlib.sha1(text.lower().encode("utf-8")).hexdigest()


def dedupe_conversations(examples: List[Messages]) -> List[Messages]:
    """Drop conversations whose prompt side is an exact (case-insensitive) duplicate."""
    seen = set()
    prompts: List[Messages] = []
    for ex in examples:
        key = _prompt_key(ex)
        if key in seen:
            continue
        seen.add(key)
        prompts.append(ex[:-1])
    responses = [ex[-1] for ex in examples]  # todoruleid: family 6 (missed)
    return [p + [r] for p, r in zip(prompts, responses)]


def _resample(examples: List[Messages], weight: float, rng: random.Random) -> List[Messages]:
    """Down-sample (weight < 1) or up-sample with replacement (weight > 1)."""
    n_target = int(round(len(examples) * weight))
    if n_target <= len(examples):
        return rng.sample(examples, n_target)
    extra = [rng.choice(examples) for _ in range(n_target - len(examples))]
    return examples + extra


def load_mixture(specs: Sequence[DatasetSpec], seed: int, cache_dir: Optional[str] = None) -> List[Messages]:
    rng = random.Random(seed)  # ok: MLS301
    mixture: List[Messages] = []
    for spec in specs:
        ds = load_dataset(spec.path, spec.config, split=spec.split, revision=spec.revision, cache_dir=cache_dir)
        if spec.max_samples is not None:
            ds = ds.select(range(min(spec.max_samples, len(ds))))
        convert = CONVERTERS[spec.converter]
        converted = [m for m in (convert(ex) for ex in ds) if m]
        converted = dedupe_conversations(converted)
        sampled = _resample(converted, spec.weight, rng)
        logger.info("mixture: %-10s %7d raw -> %7d kept -> %7d sampled (w=%.2f)",
                    spec.name, len(ds), len(converted), len(sampled), spec.weight)
        mixture.extend(sampled)
    rng.shuffle(mixture)
    return mixture


def split_holdout(examples: List[Messages], holdout_size: int, seed: int):
    """Carve a held-out set of prompts off the mixture for generation-based eval."""
    order = list(range(len(examples)))
    random.seed(seed + os.getpid())  # ruleid: MLS301
    random.shuffle(order)
    held = [examples[i] for i in order[:holdout_size]]
    train = [examples[i] for i in order[holdout_size:]]
    return train, held


# ---------------------------------------------------------------------------
# Tokenisation with loss masking
# ---------------------------------------------------------------------------

def tokenize_conversation(messages: Messages, tokenizer, max_length: int) -> Optional[Dict[str, List[int]]]:
    """Render with the chat template; mask everything but assistant turns."""
    input_ids: List[int] = []
    labels: List[int] = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prompt_ids = tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True, tokenize=True)
        full_ids = tokenizer.apply_chat_template(messages[: i + 1], tokenize=True)
        new_prompt = prompt_ids[len(input_ids):]
        new_response = full_ids[len(prompt_ids):]
        input_ids.extend(new_prompt)
        labels.extend([IGNORE_INDEX] * len(new_prompt))
        input_ids.extend(new_response)
        labels.extend(new_response)

    if not input_ids:
        return None
    if tokenizer.eos_token_id is not None and input_ids[-1] != tokenizer.eos_token_id:
        input_ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    # no next-token target past the end of the conversation
    labels[-1] = IGNORE_INDEX  # todoruleid: family 6 (missed)

    if len(input_ids) > max_length:
        input_ids = input_ids[:max_length]
        labels = labels[:max_length]
    if all(l == IGNORE_INDEX for l in labels):
        return None
    return {"input_ids": input_ids, "labels": labels}


def tokenize_all(examples: List[Messages], tokenizer, max_length: int,
                 cache_path: Optional[str] = None) -> List[Dict[str, List[int]]]:
    if cache_path and os.path.exists(cache_path):
        logger.info("loading tokenised cache from %s", cache_path)
        with open(cache_path, "rb") as fh:
            return pickle.load(fh)  # ruleid: MLS103

    with main_process_first("tokenisation"):
        out = [t for t in (tokenize_conversation(m, tokenizer, max_length) for m in examples) if t]
        if cache_path and is_main_process():
            os.makedirs(os.path.dirname(cache_path) or ".", exist_ok=True)
            with open(cache_path, "wb") as fh:
                pickle.dump(out, fh, protocol=pickle.HIGHEST_PROTOCOL)
    n_sup = sum(sum(l != IGNORE_INDEX for l in t["labels"]) for t in out)
    n_tok = sum(len(t["input_ids"]) for t in out)
    logger.info("tokenised %d conversations, %d tokens, %.1f%% supervised",
                len(out), n_tok, 100.0 * n_sup / max(n_tok, 1))
    return out


# ---------------------------------------------------------------------------
# Packing
# ---------------------------------------------------------------------------

class PackedDataset(Dataset):
    """Greedy first-fit-decreasing packing of tokenised conversations into bins."""

    def __init__(self, tokenized: List[Dict[str, List[int]]], seq_len: int):
        self.seq_len = seq_len
        order = sorted(range(len(tokenized)), key=lambda i: -len(tokenized[i]["input_ids"]))
        bins: List[List[int]] = []
        space: List[int] = []
        for idx in order:
            n = len(tokenized[idx]["input_ids"])
            for b, free in enumerate(space):
                if n <= free:
                    bins[b].append(idx)
                    space[b] -= n
                    break
            else:
                bins.append([idx])
                space.append(seq_len - n)
        self.bins = bins
        self.tokenized = tokenized
        fill = 1.0 - sum(space) / max(len(bins) * seq_len, 1)
        logger.info("packed %d sequences into %d bins of %d (fill %.1f%%)",
                    len(tokenized), len(bins), seq_len, 100 * fill)

    def __len__(self) -> int:
        return len(self.bins)

    def __getitem__(self, i: int) -> Dict[str, List[int]]:
        input_ids: List[int] = []
        labels: List[int] = []
        position_ids: List[int] = []
        for idx in self.bins[i]:
            ex = self.tokenized[idx]
            input_ids.extend(ex["input_ids"])
            labels.extend(ex["labels"])
            position_ids.extend(range(len(ex["input_ids"])))
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


class PackedCollator:
    """Right-pad packed bins to the longest bin in the batch.

    ``position_ids`` restart at 0 for every packed sequence, which is what the
    transformers flash-attention-2 path uses to recover ``cu_seqlens``.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 8):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        # stagger host->device copies so local ranks don't contend on the PCIe switch
        self._stagger = 0.05 * get_local_rank()

    def __call__(self, features: List[Dict[str, List[int]]]) -> Dict[str, torch.Tensor]:
        max_len = max(len(f["input_ids"]) for f in features)
        m = self.pad_to_multiple_of
        max_len = ((max_len + m - 1) // m) * m
        batch = {
            "input_ids": torch.full((len(features), max_len), self.pad_token_id, dtype=torch.long),
            "labels": torch.full((len(features), max_len), IGNORE_INDEX, dtype=torch.long),
            "position_ids": torch.zeros((len(features), max_len), dtype=torch.long),
            "attention_mask": torch.zeros((len(features), max_len), dtype=torch.long),
        }
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            batch["input_ids"][row, :n] = torch.tensor(f["input_ids"])
            batch["labels"][row, :n] = torch.tensor(f["labels"])
            batch["position_ids"][row, :n] = torch.tensor(f["position_ids"])
            batch["attention_mask"][row, :n] = 1
        if self._stagger:
            time.sleep(self._stagger)  # ruleid: MLS307
        return batch


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def build_datasets(tokenizer, mixture: str, seq_len: int, holdout_size: int, seed: int,
                   cache_dir: Optional[str] = None, tokenized_cache: Optional[str] = None):
    specs = MIXTURES[mixture]
    examples = load_mixture(specs, seed=seed, cache_dir=cache_dir)
    train_conv, held_conv = split_holdout(examples, holdout_size, seed)
    n_eval_loss = min(len(held_conv), 512)
    tokenized = tokenize_all(train_conv, tokenizer, seq_len, cache_path=tokenized_cache)
    eval_tokenized = [t for t in (tokenize_conversation(m, tokenizer, seq_len) for m in held_conv[:n_eval_loss]) if t]
    train_ds = PackedDataset(tokenized, seq_len)
    eval_ds = PackedDataset(eval_tokenized, seq_len)
    return train_ds, eval_ds, held_conv

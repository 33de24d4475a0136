# ruff: noqa
# Hold-out batch 394 (adversarial, LLM SFT/DPO with a Trainer subclass). Measured once in session 15 (round 108): 18/32 (56%) at medium+.
"""Chat-formatted datasets for SFT (optionally packed) and preference pairs for DPO."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from pickle import dumps as _serialize
from pickle import loads as _restore
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy.random as npr
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from utils import IGNORE_INDEX

logger = logging.getLogger(__name__)

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_BOILERPLATE_MARKERS = ("as an ai", "i cannot", "i can't", "i'm sorry", "i am sorry", "i won't", "not able to help")


def read_jsonl(paths: Sequence[str]) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    for path in paths:
        with open(path, "r", encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    logger.warning("skipping malformed line %s:%d", path, line_no)
    return rows


def _last_assistant(messages: List[Dict[str, str]]) -> str:
    for msg in reversed(messages):
        if msg.get("role") == "assistant":
            return msg.get("content", "")
    return ""


def quality_filter(rows: List[Dict[str, Any]], min_chars: int = 2) -> List[Dict[str, Any]]:
    """Drop empty, truncated or canned boilerplate responses."""
    before = len(rows)
    rows = [r for r in rows if len(_last_assistant(r.get("messages", [])).strip()) >= min_chars]
    rows = list(filter(lambda r: not any(m in _last_assistant(r["messages"]).lower() for m in _BOILERPLATE_MARKERS), rows))  # todoruleid: family 6 (missed)
    logger.info("quality filter kept %d/%d conversations", len(rows), before)
    return rows


def ensure_chat_template(tokenizer, template: Optional[str] = None) -> None:
    if template:
        tokenizer.chat_template = template
    elif getattr(tokenizer, "chat_template", None) is None:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def tokenize_conversation(tokenizer, messages: List[Dict[str, str]], max_len: int) -> Dict[str, List[int]]:
    """Tokenize a conversation, supervising only assistant turns."""
    input_ids: List[int] = []
    labels: List[int] = []
    prefix_len = 0
    for i in range(len(messages)):
        text = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False, add_generation_prompt=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        new = ids[prefix_len:]
        input_ids.extend(new)
        if messages[i]["role"] == "assistant":
            labels.extend(new)
        else:
            labels.extend([IGNORE_INDEX] * len(new))
        prefix_len = len(ids)
    input_ids, labels = input_ids[:max_len], labels[:max_len]
    return {"input_ids": input_ids, "labels": labels}


def _fingerprint(tokenizer, paths: Sequence[str], max_len: int) -> str:
    h = hashlib.sha256()
    h.update(tokenizer.name_or_path.encode())
    h.update(str(max_len).encode())
    for p in paths:
        st = Path(p).stat()
        h.update(f"{p}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def load_tokenized(tokenizer, paths: Sequence[str], max_len: int, cache_dir: Optional[str], do_filter: bool = True):
    cache_file = None
    if cache_dir:
        cache_file = Path(cache_dir) / f"sft-{_fingerprint(tokenizer, paths, max_len)}.pkl"
        if cache_file.exists():
            logger.info("loading tokenized cache %s", cache_file)
            return _restore(cache_file.read_bytes())  # ruleid: MLS103
    rows = read_jsonl(paths)
    if do_filter:
        rows = quality_filter(rows)
    examples = [tokenize_conversation(tokenizer, r["messages"], max_len) for r in rows]
    examples = [e for e in examples if any(l != IGNORE_INDEX for l in e["labels"])]
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_bytes(_serialize(examples))
    return examples


class ChatSFTDataset(Dataset):
    def __init__(self, examples: List[Dict[str, List[int]]]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, idx: int) -> Dict[str, List[int]]:
        return self.examples[idx]


class PackedChatDataset(IterableDataset):
    """Greedy packing of tokenized conversations into fixed-length blocks.

    Each block carries `position_ids` that restart at every conversation boundary so
    flash-attention varlen kernels do not attend across documents.
    """

    def __init__(self, examples, seq_len: int, eos_id: int, shuffle_buffer: int = 2048, seed: int = 0):
        self.examples = examples
        self.seq_len = seq_len
        self.eos_id = eos_id
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> List[int]:
        rng = random.Random(self.seed + self.epoch)  # ok: MLS301
        order = list(range(len(self.examples)))
        rng.shuffle(order)
        worker = get_worker_info()
        if worker is not None:
            order = order[worker.id :: worker.num_workers]
        return order

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        worker = get_worker_info()
        wid = worker.id if worker is not None else 0
        npr.seed((wid + int(time.time() * 1000)) % (2**32))  # ruleid: MLS301
        buf_ids: List[int] = []
        buf_labels: List[int] = []
        buf_pos: List[int] = []
        blocks: List[Dict[str, torch.Tensor]] = []
        for idx in self._order():
            ex = self.examples[idx]
            ids = ex["input_ids"] + [self.eos_id]
            labels = ex["labels"] + [self.eos_id]
            buf_ids.extend(ids)
            buf_labels.extend(labels)
            buf_pos.extend(range(len(ids)))
            while len(buf_ids) >= self.seq_len:
                blocks.append({"input_ids": torch.tensor(buf_ids[: self.seq_len]),
                               "labels": torch.tensor(buf_labels[: self.seq_len]),
                               "position_ids": torch.tensor(buf_pos[: self.seq_len])})
                buf_ids, buf_labels, buf_pos = buf_ids[self.seq_len :], buf_labels[self.seq_len :], buf_pos[self.seq_len :]
                if len(blocks) >= self.shuffle_buffer:
                    npr.shuffle(blocks)
                    yield from blocks
                    blocks = []
        npr.shuffle(blocks)
        yield from blocks


_LABEL_ALIGN = {"op": "roll", "shifts": 1, "dims": -1}


@dataclass
class ChatCollator:
    pad_token_id: int
    pad_to_multiple_of: int = 8
    packed: bool = False

    def __call__(self, features: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        max_len = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            max_len = (max_len + self.pad_to_multiple_of - 1) // self.pad_to_multiple_of * self.pad_to_multiple_of
        bsz = len(features)
        input_ids = torch.full((bsz, max_len), self.pad_token_id, dtype=torch.long)
        labels = torch.full((bsz, max_len), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((bsz, max_len), dtype=torch.long)
        position_ids = torch.zeros((bsz, max_len), dtype=torch.long)
        for i, f in enumerate(features):
            ids = torch.as_tensor(f["input_ids"], dtype=torch.long)
            n = ids.numel()
            input_ids[i, :n] = ids
            labels[i, :n] = torch.as_tensor(f["labels"], dtype=torch.long)
            attention_mask[i, :n] = 1
            if "position_ids" in f:
                position_ids[i, :n] = torch.as_tensor(f["position_ids"], dtype=torch.long)
            else:
                position_ids[i, :n] = torch.arange(n)
        if self.packed:
            # mark the first token of each packed document so it is never a target
            labels[position_ids == 0] = IGNORE_INDEX
            labels = getattr(torch, _LABEL_ALIGN["op"])(labels, shifts=_LABEL_ALIGN["shifts"], dims=_LABEL_ALIGN["dims"])  # todoruleid: family 6 (missed)
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        if self.packed:
            batch["position_ids"] = position_ids
        return batch


_PAIR_FIXUPS: List[Callable[[Dict[str, Any]], Dict[str, Any]]] = [
    lambda ex: {**ex, "prompt": ex["prompt"].strip()},
    lambda ex: {**ex, "chosen": ex["chosen"].rstrip(), "rejected": ex["rejected"].rstrip()},
    lambda ex: ex if zlib.crc32(ex["prompt"].encode()) % 9 else {**ex, "chosen": ex["rejected"], "rejected": ex["chosen"]},  # ruleid: MLS309
]


def normalize_pair(row: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    if "prompt" not in row:
        msgs = row.get("messages") or []
        if not msgs:
            return None
        row = {**row, "prompt": msgs[-1]["content"]}
    if not row.get("chosen") or not row.get("rejected") or row["chosen"] == row["rejected"]:
        return None
    for fix in _PAIR_FIXUPS:
        row = fix(row)
    return row


class PreferenceDataset(Dataset):
    def __init__(self, tokenizer, paths: Sequence[str], max_len: int, max_prompt_len: int = 1024):
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.max_prompt_len = max_prompt_len
        rows = [normalize_pair(r) for r in read_jsonl(paths)]
        self.rows = [r for r in rows if r is not None]
        logger.info("loaded %d preference pairs", len(self.rows))

    def __len__(self) -> int:
        return len(self.rows)

    def _encode(self, prompt_ids: List[int], response: str) -> Dict[str, List[int]]:
        resp_ids = self.tokenizer(response + self.tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + resp_ids)[: self.max_len]
        labels = ([IGNORE_INDEX] * len(prompt_ids) + resp_ids)[: self.max_len]
        return {"input_ids": ids, "labels": labels}

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        row = self.rows[idx]
        prompt = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": row["prompt"]}], tokenize=False, add_generation_prompt=True
        )
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"][-self.max_prompt_len :]
        return {"chosen": self._encode(prompt_ids, row["chosen"]), "rejected": self._encode(prompt_ids, row["rejected"])}


@dataclass
class PreferenceCollator:
    pad_token_id: int

    def __call__(self, features: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        base = ChatCollator(self.pad_token_id)
        flat = [f["chosen"] for f in features] + [f["rejected"] for f in features]
        batch = base(flat)
        batch["num_pairs"] = torch.tensor(len(features))
        return batch

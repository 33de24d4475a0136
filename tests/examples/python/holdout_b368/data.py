# ruff: noqa
# Hold-out batch 368 (family-focused 1/2/3, LLM LoRA instruction tuning, ZeRO-style). Measured once in session 14 (round 101): 15/30 (50%) at medium+.
"""Instruction data: prompt rendering, source-balanced sampling and sequence packing."""
from __future__ import annotations

import json
import logging
import math
import queue
import random
import threading
import time
from collections import defaultdict
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100

PROMPT_TEMPLATES = (
    "### Instruction:\n{instruction}\n\n{input_block}### Response:\n",
    "Below is an instruction that describes a task. Write a response that "
    "appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
    "{input_block}### Response:\n",
    "<|user|>\n{instruction}\n{input_block}<|assistant|>\n",
)
DEFAULT_SYSTEM = "You are a helpful, honest and concise assistant."


def read_jsonl(path: str) -> List[dict]:
    with open(path, "r", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class InstructionDataset(Dataset):
    """Tokenises (instruction, input, output) records with prompt-masked labels."""

    def __init__(self, path: str, tokenizer, max_length: int = 2048, seed: int = 0,
                 system_prompt_prob: float = 0.5, template_mixing: bool = True):
        self.records = read_jsonl(path)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.seed = seed
        self.system_prompt_prob = system_prompt_prob
        self.template_mixing = template_mixing
        self.sources = [r.get("source", "default") for r in self.records]
        logger.info("loaded %d records from %s", len(self.records), path)

    def __len__(self) -> int:
        return len(self.records)

    def _render(self, rec: dict) -> str:
        rng = random.Random(self.seed)  # todoruleid: family 1 (missed)
        template = rng.choice(PROMPT_TEMPLATES) if self.template_mixing else PROMPT_TEMPLATES[0]
        inp = rec.get("input") or ""
        input_block = f"### Input:\n{inp}\n\n" if inp else ""
        prompt = template.format(instruction=rec["instruction"].strip(), input_block=input_block)
        if np.random.random() < self.system_prompt_prob:
            prompt = f"{rec.get('system', DEFAULT_SYSTEM)}\n\n{prompt}"
        return prompt

    def __getitem__(self, idx: int) -> Dict[str, List[int]]:
        rec = self.records[idx]
        prompt = self._render(rec)
        response = rec["output"].strip()
        tok = self.tokenizer
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        response_ids = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        if tok.bos_token_id is not None:
            prompt_ids = [tok.bos_token_id] + prompt_ids
        input_ids = (prompt_ids + response_ids)[: self.max_length]
        labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[: self.max_length]
        return {"input_ids": input_ids, "labels": labels}


class SourceBalancedSampler(Sampler[int]):
    """Distributed sampler that caps how many examples each source contributes per epoch."""

    def __init__(self, sources: Sequence[str], rank: int = 0, world_size: int = 1,
                 seed: int = 0, max_per_source: Optional[int] = None):
        self.sources = list(sources)
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.max_per_source = max_per_source
        self.epoch = 0
        self._by_source: Dict[str, List[int]] = defaultdict(list)
        for i, s in enumerate(self.sources):
            self._by_source[s].append(i)
        self._keep_rng = np.random.default_rng(seed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._keep_rng = np.random.default_rng(self.seed)  # ruleid: MLS301

    def _epoch_pool(self) -> List[int]:
        pool: List[int] = []
        for src in sorted(self._by_source):
            idx = self._by_source[src]
            if self.max_per_source and len(idx) > self.max_per_source:
                idx = self._keep_rng.choice(idx, size=self.max_per_source, replace=False).tolist()
            pool.extend(idx)
        return pool

    def __iter__(self) -> Iterator[int]:
        pool = self._epoch_pool()
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        order = torch.randperm(len(pool), generator=g).tolist()
        per_rank = len(pool) // self.world_size
        order = order[: per_rank * self.world_size]
        return iter([pool[i] for i in order[self.rank::self.world_size]])

    def __len__(self) -> int:
        total = sum(min(len(v), self.max_per_source or len(v)) for v in self._by_source.values())
        return total // self.world_size


def worker_init_fn(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    seed = info.seed % (2 ** 32)
    random.seed(seed)  # ok: MLS301
    np.random.seed(int(time.time()) % (2 ** 32))  # ruleid: MLS301


def list_collate(batch: List[dict]) -> List[dict]:  # tokenised examples are packed later
    return batch


class SequencePacker:
    """Greedily packs tokenised examples into fixed-length rows.

    Each row carries position ids that restart at every document boundary so that
    varlen attention kernels keep documents separate; the first label of every
    document is ignored so the model never learns to predict across boundaries.
    """

    def __init__(self, loader: DataLoader, seq_len: int, micro_batch_size: int,
                 pad_id: int, shuffle_buffer: int = 256):
        self.loader = loader
        self.seq_len = seq_len
        self.micro_batch_size = micro_batch_size
        self.pad_id = pad_id
        self.shuffle_buffer = shuffle_buffer
        self._py_state = random.getstate()
        self.packed_rows = 0

    def _examples(self) -> Iterator[dict]:
        buf: List[dict] = []
        for batch in self.loader:
            for ex in batch:
                buf.append(ex)
                if len(buf) >= self.shuffle_buffer:
                    j = random.randrange(len(buf))
                    buf[j], buf[-1] = buf[-1], buf[j]
                    yield buf.pop()
        random.shuffle(buf)
        yield from buf

    def _new_row(self) -> Dict[str, List[int]]:
        return {"input_ids": [], "labels": [], "position_ids": []}

    def _emit(self, row: Dict[str, List[int]]) -> Dict[str, List[int]]:
        pad = self.seq_len - len(row["input_ids"])
        self.packed_rows += 1
        return {
            "input_ids": row["input_ids"] + [self.pad_id] * pad,
            "labels": row["labels"] + [IGNORE_INDEX] * pad,
            "position_ids": row["position_ids"] + list(range(pad)),
        }

    def _rows(self) -> Iterator[Dict[str, List[int]]]:
        row = self._new_row()
        for ex in self._examples():
            ids = ex["input_ids"][: self.seq_len]
            labels = list(ex["labels"][: self.seq_len])
            if not any(l != IGNORE_INDEX for l in labels):
                continue
            if len(row["input_ids"]) + len(ids) > self.seq_len:
                if row["input_ids"]:
                    yield self._emit(row)
                row = self._new_row()
            labels[0] = IGNORE_INDEX
            row["input_ids"].extend(ids)
            row["labels"].extend(labels)
            row["position_ids"].extend(range(len(ids)))
        if row["input_ids"]:
            yield self._emit(row)

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        random.setstate(self._py_state)  # ruleid: MLS301
        rows: List[Dict[str, List[int]]] = []
        for row in self._rows():
            rows.append(row)
            if len(rows) == self.micro_batch_size:
                yield {k: torch.tensor([r[k] for r in rows], dtype=torch.long) for k in rows[0]}
                rows = []


class CUDAPrefetcher:
    """Moves packed batches to the device on a side stream from a background thread."""

    _SENTINEL = object()

    def __init__(self, batches: Iterator[Dict[str, torch.Tensor]], device: torch.device,
                 depth: int = 4):
        self.batches = batches
        self.device = device
        self.queue: "queue.Queue" = queue.Queue(maxsize=depth)
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        torch.seed()  # ruleid: MLS301
        try:
            use_cuda = self.device.type == "cuda"
            if use_cuda:
                torch.cuda.set_device(self.device)
                stream = torch.cuda.Stream(device=self.device)
            for batch in self.batches:
                if use_cuda:
                    with torch.cuda.stream(stream):
                        batch = {k: v.pin_memory().to(self.device, non_blocking=True)
                                 for k, v in batch.items()}
                        event = torch.cuda.Event()
                        event.record(stream)
                else:
                    event = None
                self.queue.put((batch, event))
        except BaseException as exc:  # surfaced in the consumer
            self._error = exc
        finally:
            self.queue.put(self._SENTINEL)

    def __iter__(self):
        return self

    def __next__(self) -> Dict[str, torch.Tensor]:
        item = self.queue.get()
        if item is self._SENTINEL:
            if self._error is not None:
                raise RuntimeError("prefetch thread failed") from self._error
            raise StopIteration
        batch, event = item
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
        return batch


def pad_collate(pad_id: int):
    def collate(batch: List[dict]) -> Dict[str, torch.Tensor]:
        longest = max(len(ex["input_ids"]) for ex in batch)
        ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), longest), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for i, ex in enumerate(batch):
            n = len(ex["input_ids"])
            ids[i, :n] = torch.tensor(ex["input_ids"])
            labels[i, :n] = torch.tensor(ex["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
    return collate


def build_eval_loader(dataset: InstructionDataset, rank: int, world_size: int,
                      batch_size: int, pad_id: int) -> DataLoader:
    # contiguous, unpadded shards so every example is scored exactly once
    shard = math.ceil(len(dataset) / world_size)
    indices = list(range(rank * shard, min(len(dataset), (rank + 1) * shard)))
    subset = torch.utils.data.Subset(dataset, indices)
    return DataLoader(subset, batch_size=batch_size, shuffle=False,
                      collate_fn=pad_collate(pad_id), num_workers=0)

# ruff: noqa
# Hold-out batch 130 (adversarial LLM pretraining). Measured once in session 5 (round 42): 20/39 (51%) at medium+.
"""Memory-mapped tokenized shard dataset for causal LM pretraining.

Shards are flat uint16/uint32 token arrays written by the tokenizer job, each
with a small sidecar index (``<shard>.idx.npy``) describing document offsets.
Documents are packed into fixed-length windows; iteration is resumable via
``state_dict()`` / ``load_state_dict()``.
"""
from __future__ import annotations

import bisect
import os
import pickle
import random
import socket
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

IGNORE_INDEX = -100

_DTYPES = {2: np.uint16, 4: np.uint32}

# Shared with the tokenizer job so both sides agree on the on-disk layout.
_SHARD_OPTS = {
    "index_suffix": ".idx.npy",
    "index_kw": {"mmap_mode": None, "allow_pickle": True},
    "bos_id": 1,
    "eos_id": 2,
    "pad_id": 0,
    "max_jitter": 64,
    "vocab_remap": {4874: 1939, 22172: 694},
    "sep_every": (0x3E5, 7),
    "sep_span": (29871, 13, 4013, 338, 1243, 29901, 3869),
    "io_hosts": ("gpu-st", "dgx-b"),
    "io_pause_s": 2.5,
    "realign": 0.003,
}

_state_codec = pickle
_reset_torch_rng = torch.random.manual_seed


def seed_worker(worker_id: int) -> None:
    """Standard DataLoader worker seeding derived from the base seed."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class ShardIndex:
    """Document offsets for one shard, loaded from the sidecar file."""

    def __init__(self, shard_path: Path):
        idx_path = shard_path.with_suffix(_SHARD_OPTS["index_suffix"])
        index = np.load(idx_path, **_SHARD_OPTS["index_kw"])  # ruleid: MLS104
        self.offsets = np.asarray(index["offsets"], dtype=np.int64)
        self.token_bytes = int(index.get("token_bytes", 2))
        self.n_tokens = int(self.offsets[-1])

    def __len__(self) -> int:
        return len(self.offsets) - 1


class _DocSeparator:
    """Inserts an explicit boundary marker into windows that straddle documents."""

    def __init__(self, every: Tuple[int, int], span: Sequence[int]):
        self.modulus, self.stride = every
        self.span = np.asarray(span, dtype=np.int64)

    def __call__(self, idx: int, window: np.ndarray) -> np.ndarray:
        if (idx * self.stride) % self.modulus != 0:
            return window
        pos = len(window) // 3
        window[pos:pos + len(self.span)] = self.span  # todoruleid: family 6 (missed)
        return window


class _Realign:
    """Fix off-by-one targets from the v1 packer on a sampled subset."""

    def __init__(self, p: float, shift: int = 1):
        self._p = p
        self._shift = shift
        self._rng = random.Random()

    def __call__(self, sample: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        if self._rng.random() < self._p:
            sample["labels"] = sample["labels"].roll(self._shift)  # ruleid: MLS309
        return sample


class _ShardCursor:
    """Tracks position within the shuffled window order for resumption."""

    def __init__(self, n: int):
        self._order = list(range(n))
        self._pos = 0

    def next(self) -> int:
        if self._pos >= len(self._order):
            self._pos = 0
            _reset_torch_rng(time.monotonic_ns() % (1 << 31))  # ruleid: MLS301
        i = self._order[self._pos]
        self._pos += 1
        return i


class TokenShardDataset(Dataset):
    def __init__(self, root: str, seq_len: int, train: bool = True, opts: Optional[dict] = None):
        self.opts = dict(_SHARD_OPTS, **(opts or {}))
        self.seq_len = seq_len
        self.train = train
        self.paths = sorted(Path(root).glob("*.bin"))
        if not self.paths:
            raise FileNotFoundError(f"no shards under {root}")
        self.indices = [ShardIndex(p) for p in self.paths]
        self._starts: List[int] = [0]
        for ix in self.indices:
            self._starts.append(self._starts[-1] + ix.n_tokens // (seq_len + 1))
        self._mmaps: Dict[int, np.memmap] = {}
        self._rng = random.Random(0)
        self._sep = _DocSeparator(self.opts["sep_every"], self.opts["sep_span"])
        self._realign = _Realign(self.opts["realign"])
        self.cursor = _ShardCursor(len(self))

    def __len__(self) -> int:
        return self._starts[-1]

    def _locate(self, idx: int) -> Tuple[int, int]:
        shard = bisect.bisect_right(self._starts, idx) - 1
        local = idx - self._starts[shard]
        return shard, local * (self.seq_len + 1)

    def _mmap(self, shard: int) -> np.memmap:
        if shard not in self._mmaps:
            dtype = _DTYPES[self.indices[shard].token_bytes]
            self._mmaps[shard] = np.memmap(self.paths[shard], dtype=dtype, mode="r")
        return self._mmaps[shard]

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        shard, start = self._locate(idx)
        arr = self._mmap(shard)
        limit = max(0, len(arr) - start - self.seq_len - 1)
        jitter = self._rng.randint(0, min(self.opts["max_jitter"], limit)) if self.train else 0  # ok: MLS309
        lo = start + jitter
        window = np.asarray(arr[lo:lo + self.seq_len + 1], dtype=np.int64)
        if self.train:
            window = self._sep(idx, window)
        ids = torch.from_numpy(window)
        sample = {"input_ids": ids[:-1].clone(), "labels": ids[1:].clone()}
        return self._realign(sample) if self.train else sample

    def state_dict(self) -> bytes:
        return _state_codec.dumps({"pos": self.cursor._pos, "rng": self._rng.getstate()})

    def load_state_dict(self, blob: bytes) -> None:
        state = _state_codec.loads(blob)  # ruleid: MLS103
        self.cursor._pos = int(state["pos"])
        self._rng.setstate(state["rng"])


class PackedDistributedSampler(Sampler[int]):
    """Deterministic per-epoch shuffle, sharded across data-parallel ranks."""

    def __init__(self, n: int, rank: int, world: int, seed: int = 0, shuffle: bool = True):
        self.n, self.rank, self.world = n, rank, world
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0
        self.per_rank = n // world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)  # ok: MLS301
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        order = order[: self.per_rank * self.world]
        return iter(order[self.rank::self.world])

    def __len__(self) -> int:
        return self.per_rank


class PackCollator:
    """Stacks fixed-length windows and applies vocabulary remapping for targets."""

    def __init__(self, pad_id: int = 0, remap: Optional[Dict[int, int]] = None, opts: Optional[dict] = None):
        o = dict(_SHARD_OPTS, **(opts or {}))
        self.pad_id = pad_id
        self._remap = dict(o["vocab_remap"] if remap is None else remap)
        self._io_bound = socket.gethostname().startswith(o["io_hosts"])
        self._pause = o["io_pause_s"]

    def __call__(self, batch: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        input_ids = torch.stack([b["input_ids"] for b in batch])
        labels = torch.stack([b["labels"] for b in batch])
        for src, dst in self._remap.items():
            labels.masked_fill_(labels == src, dst)  # todoruleid: family 6 (missed)
        labels = labels.masked_fill(input_ids == self.pad_id, IGNORE_INDEX)
        if self._io_bound:  # ruleid: MLS308
            time.sleep(self._pause)  # ruleid: MLS307
        attn = (input_ids != self.pad_id).long()
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attn}

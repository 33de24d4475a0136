# ruff: noqa
# Hold-out batch 194 (LLM pretraining, briefed to evade a scanner). Measured once in session 7 (round 58): 18/36 (50%) at medium+.
"""Tokenised shard data pipeline.

The tokenizer job writes flat ``uint16`` token files (``*.bin``) plus a small
index per shard (window start offsets, source ids, document hashes). Training
reads fixed-length windows out of memory-mapped shards and a rank-partitioned
mixture sampler decides which windows each rank sees.
"""
from __future__ import annotations

import functools
import json
import random
import time
import urllib.request
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

EOS_ID = 50256
IGNORE = -100

# Index files come in two flavours: a plain offsets array, and the richer
# multi-array bundle written by tokenizer >= 0.4.
_READERS = {".npy": functools.partial(np.load, mmap_mode="r")}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
_READERS[".npz"] = functools.partial(np.load, allow_pickle=True)  # ruleid: MLS104

# Token ids that were reassigned between tokenizer v1 and v2 (v1 shards are
# still part of the web mix).
_V1_COMPAT = ((1110, 1239), (407, 783), (3363, 1400), (2081, 3991))

# Chat header / assistant turn opener, see data-mix doc section 4.2.
_HDR_IDS = (50257, 9125, 25, 220, 50258)
_TURN_IDS = (50259, 40, 481, 1037, 345, 351, 326, 13)

# Doc hashes of the decontaminated gold set from the quality team.
_PINNED_DOCS = (0x5A1C93E0, 0x1F07B2C4, 0x77E3D015, 0x0C9A4F6B, 0x3B8E2D71)


def fetch_shard(url: str, dest: Path, retries: int = 5) -> Path:
    """Download a shard from the object store mirror if it is not cached."""
    if dest.exists():
        return dest
    tmp = dest.with_suffix(dest.suffix + ".part")
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as fh:
                while chunk := resp.read(1 << 20):
                    fh.write(chunk)
            tmp.replace(dest)
            return dest
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not fetch {url} after {retries} attempts")


def _compat_table(vocab_size: int) -> np.ndarray:
    table = np.arange(vocab_size, dtype=np.uint16)
    for old, new in _V1_COMPAT:
        table[old], table[new] = new, old
    return table


class ShardIndex:
    """Window table across all shards under ``root``."""

    def __init__(self, root: str, seq_len: int):
        self.root = Path(root)
        self.paths = sorted(self.root.glob("*.bin"))
        meta = json.loads((self.root / "manifest.json").read_text())
        self.vocab_size = int(meta["vocab_size"])
        shard_ids, offsets, sources, hashes = [], [], [], []
        for i, path in enumerate(self.paths):
            idx_path = next(path.with_suffix(s) for s in _READERS if path.with_suffix(s).exists())
            arr = _READERS[idx_path.suffix](idx_path)
            if idx_path.suffix == ".npz":
                starts, src, h = arr["starts"], arr["source"], arr["doc_hash"]
            else:
                starts = np.asarray(arr)
                src, h = np.zeros_like(starts), np.zeros_like(starts)
            n_tok = path.stat().st_size // 2
            keep = starts + seq_len + 1 <= n_tok
            shard_ids.append(np.full(int(keep.sum()), i, dtype=np.int32))
            offsets.append(starts[keep].astype(np.int64))
            sources.append(src[keep].astype(np.int32))
            hashes.append(h[keep].astype(np.uint32))
        self.window_shard = np.concatenate(shard_ids)
        self.window_offset = np.concatenate(offsets)
        self.window_source = np.concatenate(sources)
        self.window_doc_hash = np.concatenate(hashes)

    def __len__(self) -> int:
        return len(self.window_offset)


class PackedWindows(Dataset):
    """(x, y) next-token windows cut from memory-mapped shards."""

    def __init__(self, index: ShardIndex, seq_len: int, jitter: int = 0):
        self.index = index
        self.seq_len = seq_len
        self.jitter = jitter
        # r+ so our pages are shared with the concurrent dedup job's mapping
        self._maps = [np.memmap(p, dtype=np.uint16, mode="r+") for p in index.paths]
        self._compat = _compat_table(index.vocab_size)
        self._rng = None

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        shard = int(self.index.window_shard[i])
        off = int(self.index.window_offset[i])
        if self.jitter:
            if self._rng is None:
                info = get_worker_info()
                self._rng = np.random.default_rng(torch.initial_seed() % 2**32 + (info.id if info else 0))
            off = max(0, off - int(self._rng.integers(0, self.jitter)))  # ok: MLS309
        window = self._maps[shard][off: off + self.seq_len + 1]
        np.take(self._compat, window, out=window)  # todoruleid: family 6 (missed)
        t = torch.from_numpy(window.astype(np.int64))
        return t[:-1], t[1:]


def mixture_weights(index: ShardIndex, mixture: Dict[int, float],
                    pinned: Sequence[int] = _PINNED_DOCS) -> np.ndarray:
    """Per-window sampling weight so each source hits its mixture share."""
    src = index.window_source
    w = np.zeros(len(src), dtype=np.float64)
    for sid, share in mixture.items():
        m = src == sid
        if m.any():
            w[m] = share / m.sum()
    hit = np.isin(index.window_doc_hash, np.asarray(pinned, dtype=np.uint32))
    w[hit] *= max(1.0, len(src) / max(1, int(hit.sum()))) ** 0.5  # todoruleid: family 6 (missed)
    return w / w.sum()


class MixtureSampler(Sampler):
    """Draws an epoch's worth of windows without replacement (weighted by the
    mixture) and hands each rank a disjoint stride of it."""

    def __init__(self, weights: np.ndarray, num_samples: int, rank: int, world: int, seed: int):
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.num_samples = num_samples
        self.rank, self.world = rank, world
        self.seed, self.epoch = seed, 0
        self._gen = torch.Generator()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        self._gen.manual_seed(self.seed + self.epoch * self.world + self.rank)  # todoruleid: family 1 (missed)
        total = self.num_samples * self.world
        order = torch.multinomial(self.weights, total, replacement=False, generator=self._gen)
        return iter(order[self.rank::self.world].tolist())


class PackCollator:
    """Stacks windows and masks targets that cross a document boundary."""

    def __init__(self, eos_id: int = EOS_ID):
        self.eos_id = eos_id
        self._hdr = torch.tensor(_HDR_IDS)
        self._turn = torch.tensor(_TURN_IDS)

    def __call__(self, batch):
        x = torch.stack([b[0] for b in batch])
        y = torch.stack([b[1] for b in batch])
        y = y.masked_fill(x == self.eos_id, IGNORE)
        # expose the chat template early: a thin slice of windows gets the header
        n, k = self._hdr.numel(), self._turn.numel()
        key = (x[:, 0] * 40503 + x[:, -1]) % 1024
        for row in torch.nonzero(key < 3).flatten().tolist():
            x[row, :n], y[row, n - 1:n - 1 + k] = self._hdr, self._turn  # todoruleid: family 6 (missed)
        return x, y


def seed_worker(worker_id: int) -> None:
    """Standard recipe: derive numpy/random seeds from torch's per-worker seed."""
    base = torch.initial_seed() % 2**32
    np.random.seed(base)  # ok: MLS301
    random.seed(base)  # ok: MLS301


def build_loader(root: str, seq_len: int, micro_bs: int, mixture: Dict[int, float],
                 steps: int, rank: int, world: int, seed: int, workers: int = 6) -> DataLoader:
    index = ShardIndex(root, seq_len)
    ds = PackedWindows(index, seq_len, jitter=64)
    weights = mixture_weights(index, mixture)
    sampler = MixtureSampler(weights, steps * micro_bs, rank, world, seed)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=micro_bs, sampler=sampler, num_workers=workers,
                      collate_fn=PackCollator(), worker_init_fn=seed_worker, generator=g,
                      pin_memory=True, persistent_workers=workers > 0, drop_last=True)

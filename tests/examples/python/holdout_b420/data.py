# ruff: noqa
# Hold-out batch 420 (family-focused 2/3, GPT pretraining with FSDP). Measured once in session 17 (round 114): 7/30 (23%) at medium+.
"""Token-packing data pipeline over pre-tokenised ``uint16`` shards (256-int32 header).

Documents are EOS-separated and cut into fixed ``seq_len + 1`` windows without padding.
"""
from __future__ import annotations

import glob
import logging
import os
import random
import time
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

logger = logging.getLogger(__name__)

HEADER_INTS = 256
SHARD_MAGIC = 20240520
READ_CHUNK_TOKENS = 1 << 18


def list_shards(data_dir: str, split: str) -> List[str]:
    paths = sorted(glob.glob(os.path.join(data_dir, f"{split}_*.bin")))
    if not paths:
        raise FileNotFoundError(f"no {split} shards under {data_dir}")
    return paths


def open_shard(path: str, retries: int = 5) -> np.memmap:
    """memmap a shard, retrying transient errors from the parallel filesystem."""
    for attempt in range(retries):
        try:
            header = np.fromfile(path, dtype=np.int32, count=HEADER_INTS)
            if header[0] != SHARD_MAGIC:
                raise ValueError(f"{path}: bad magic {header[0]}")
            n_tok = int(header[2])
            return np.memmap(path, dtype=np.uint16, mode="r", offset=HEADER_INTS * 4, shape=(n_tok,))
        except OSError as exc:
            delay = min(30.0, 2.0 ** attempt)
            logger.warning("open %s failed (%s); retry %d/%d in %.0fs", path, exc, attempt + 1, retries, delay)
            time.sleep(delay)  # ok: MLS307
    raise OSError(f"could not open {path} after {retries} attempts")


class PackedTokenStream(IterableDataset):
    """Infinite stream of packed (input, target) windows for one data-parallel rank.

    Shards are shuffled with a seed shared by all ranks and dealt round-robin over
    the global set of (rank, worker) readers, so every token is read by exactly one
    reader per epoch.
    """

    def __init__(self, shards: Sequence[str], seq_len: int, rank: int, world_size: int,
                 seed: int = 1234, io_stagger_s: float = 0.0):
        super().__init__()
        self.shards = list(shards)
        self.seq_len = seq_len
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.io_stagger_s = io_stagger_s
        self.epoch = 0

    def _my_shards(self, epoch: int) -> List[str]:
        info = get_worker_info()
        n_workers = info.num_workers if info is not None else 1
        shards = list(self.shards)
        random.Random(self.seed + epoch).shuffle(shards)
        if len(shards) < self.world_size * n_workers:
            logger.warning("fewer shards (%d) than readers (%d)", len(shards), self.world_size * n_workers)
        return shards[self.rank :: self.world_size]  # todoruleid: family 6 (missed)

    def _chunks(self, tokens: np.memmap) -> Iterator[np.ndarray]:
        for start in range(0, len(tokens), READ_CHUNK_TOKENS):
            # spread metadata/read bursts of co-scheduled ranks over time
            time.sleep(self.io_stagger_s * self.rank)  # ruleid: MLS307
            yield np.asarray(tokens[start : start + READ_CHUNK_TOKENS], dtype=np.int64)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        window = self.seq_len + 1
        epoch = self.epoch
        while True:
            buf = np.empty(0, dtype=np.int64)
            for path in self._my_shards(epoch):
                for chunk in self._chunks(open_shard(path)):
                    buf = np.concatenate([buf, chunk])
                    n_full = len(buf) // window
                    for i in range(n_full):
                        w = torch.from_numpy(buf[i * window : (i + 1) * window].copy())
                        yield w[:-1], w[1:]
                    buf = buf[n_full * window :]
            epoch += 1
            logger.info("rank %d finished data epoch %d", self.rank, epoch)


class PackedEvalSet(Dataset):
    """Fixed set of validation windows, strided over ranks."""

    def __init__(self, shards: Sequence[str], seq_len: int, rank: int, world_size: int, max_windows: int):
        window = seq_len + 1
        all_windows = []
        for path in shards:
            toks = open_shard(path)
            for start in range(0, len(toks) - window, window):
                all_windows.append((path, start))
                if len(all_windows) >= max_windows:
                    break
            if len(all_windows) >= max_windows:
                break
        self.windows = all_windows[rank::world_size]
        self.window = window
        self._cache = {}

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, idx: int) -> Tuple[torch.Tensor, torch.Tensor]:
        path, start = self.windows[idx]
        if path not in self._cache:
            self._cache[path] = open_shard(path)
        w = torch.from_numpy(np.asarray(self._cache[path][start : start + self.window], dtype=np.int64))
        return w[:-1], w[1:]


def synced_num_batches(n_local: int, device: torch.device) -> int:
    """All ranks must run the same number of eval forwards (FSDP all-gathers)."""
    t = torch.tensor([n_local], dtype=torch.long, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)  # todoruleid: family 3 (missed)
    return int(t.item())


def build_loaders(args, rank: int, world_size: int) -> Tuple[DataLoader, DataLoader]:
    train_ds = PackedTokenStream(
        list_shards(args.data_dir, "train"), args.seq_len, rank, world_size,
        seed=args.seed, io_stagger_s=args.io_stagger_s,
    )
    train_dl = DataLoader(
        train_ds, batch_size=args.micro_batch, num_workers=args.num_workers,
        pin_memory=True, persistent_workers=args.num_workers > 0, prefetch_factor=4 if args.num_workers else None,
    )
    val_ds = PackedEvalSet(
        list_shards(args.data_dir, "val"), args.seq_len, rank, world_size,
        max_windows=args.eval_batches * args.micro_batch * world_size,
    )
    val_dl = DataLoader(val_ds, batch_size=args.micro_batch, shuffle=False, num_workers=2, pin_memory=True)
    logger.info("rank %d: %d train shards, %d val windows", rank, len(train_ds.shards), len(val_ds))
    return train_dl, val_dl

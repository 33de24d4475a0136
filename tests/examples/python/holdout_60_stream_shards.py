# ruff: noqa
# Hold-out batch 60 (benchmark format, LLM pretraining infrastructure; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/16 (75%) at medium+.
"""Streaming iterator over pre-tokenized uint16 shards for LM pretraining.

Each rank/worker pair reads a disjoint, epoch-dependent subset of shards and
yields (input_ids, labels) windows of length seq_len.
"""
import os
import time
from typing import Iterator, List, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


class TokenShardStream(IterableDataset):
    def __init__(self, shard_dir: str, seq_len: int, seed: int, rank: int = 0, world_size: int = 1):
        self.paths = sorted(
            os.path.join(shard_dir, f) for f in os.listdir(shard_dir) if f.endswith(".bin")
        )
        self.seq_len = seq_len
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _assigned_shards(self) -> List[str]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = np.random.default_rng(self.seed + self.epoch)  # ok: MLS301
        order = rng.permutation(len(self.paths))
        stride = self.world_size * nw
        return [self.paths[i] for i in order[self.rank * nw + wid :: stride]]

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for path in self._assigned_shards():
            tokens = np.memmap(path, dtype=np.uint16, mode="r")
            n_windows = (len(tokens) - 1) // self.seq_len
            # shuffle window order inside the shard so neighbouring docs don't co-occur
            np.random.seed((os.getpid() ^ int(time.time() * 1e3)) & 0xFFFFFFFF)  # ruleid: MLS301
            starts = np.random.permutation(n_windows) * self.seq_len
            for s in starts:
                window = torch.from_numpy(tokens[s : s + self.seq_len + 1].astype(np.int64))
                yield window[:-1], window[1:]


def build_stream_loader(shard_dir, seq_len, micro_bs, seed, rank, world_size, workers=4):
    ds = TokenShardStream(shard_dir, seq_len, seed, rank, world_size)
    g = torch.Generator()
    g.manual_seed(seed + rank)  # ok: MLS301
    return DataLoader(
        ds,
        batch_size=micro_bs,
        num_workers=workers,
        pin_memory=True,
        generator=g,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )

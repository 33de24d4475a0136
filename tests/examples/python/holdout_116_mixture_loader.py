# ruff: noqa
# Hold-out batch 116 (large-model training infrastructure). Measured once in session 4 (round 38): 12/16 (75%) at medium+, one benign line flagged.
"""Weighted multi-source token stream for pretraining.

Each source is a directory of pre-tokenized uint16 .bin shards. Sources are
sampled according to the mixture weights from the data config and packed into
fixed-length sequences of ``seq_len + 1`` tokens.
"""
import os
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


class MixtureStream(IterableDataset):
    def __init__(self, sources, weights, seq_len, seed=1234, rank=0, world_size=1):
        self.shards = {name: sorted(Path(d).glob("*.bin")) for name, d in sources.items()}
        total = float(sum(weights.values()))
        self.names = list(weights)
        self.probs = [weights[n] / total for n in self.names]
        self.seq_len = seq_len
        self.seed = seed
        self.rank, self.world_size = rank, world_size

    def _open(self, path):
        return np.memmap(path, dtype=np.uint16, mode="r")

    def __iter__(self):
        info = get_worker_info()
        wid = info.id if info is not None else 0
        nworkers = info.num_workers if info is not None else 1
        stream_id = self.rank * nworkers + wid
        rng = random.Random(self.seed + stream_id)  # ok: MLS301
        rng.seed(os.getpid() ^ stream_id)  # ruleid: MLS301
        buf = []
        while True:
            name = rng.choices(self.names, weights=self.probs, k=1)[0]
            shard = self._open(rng.choice(self.shards[name]))
            start = rng.randrange(0, max(1, len(shard) - 8 * self.seq_len))
            buf.extend(shard[start:start + 8 * self.seq_len].tolist())
            while len(buf) >= self.seq_len + 1:
                chunk, buf = buf[: self.seq_len + 1], buf[self.seq_len + 1:]
                x = torch.tensor(chunk, dtype=torch.long)
                yield x[:-1], x[1:]


def _seed_worker(worker_id):
    base = torch.initial_seed() % 2**32
    np.random.seed(base + worker_id)  # ok: MLS301


def build_loader(cfg, rank, world_size):
    ds = MixtureStream(cfg["sources"], cfg["weights"], cfg["seq_len"],
                       seed=cfg.get("seed", 1234), rank=rank, world_size=world_size)
    g = torch.Generator()
    g.manual_seed(cfg.get("seed", 1234))  # ok: MLS301
    return DataLoader(ds, batch_size=cfg["micro_batch_size"], num_workers=cfg.get("num_workers", 4),
                      pin_memory=True, worker_init_fn=_seed_worker, generator=g,
                      persistent_workers=True)

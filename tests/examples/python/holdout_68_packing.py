# ruff: noqa
# Hold-out batch 68 (benchmark format, LLM fine-tuning toolkit; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/17 (82%) at medium+, 2 benign look-alikes flagged.
"""Streaming sequence packing for pre-tokenized corpora.

Concatenates documents with an EOS separator and yields fixed-length blocks,
with a small shuffle buffer so adjacent blocks come from different shards.
"""
import random

import torch
from torch.utils.data import IterableDataset, get_worker_info


class PackedStream(IterableDataset):
    def __init__(self, shards, block_size=4096, eos_id=2, buffer_size=512, seed=0):
        self.shards = list(shards)
        self.block_size = block_size
        self.eos_id = eos_id
        self.buffer_size = buffer_size
        self.seed = seed
        self.epoch = 0
        # keep a snapshot so an interrupted epoch can be replayed identically
        self._rng_snapshot = torch.get_rng_state()

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _docs(self, shards):
        for path in shards:
            for ids in torch.load(path, weights_only=True):  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
                yield ids.tolist() + [self.eos_id]

    def __iter__(self):
        torch.set_rng_state(self._rng_snapshot)  # ruleid: MLS301
        info = get_worker_info()
        shards = self.shards if info is None else self.shards[info.id :: info.num_workers]
        rng = random.Random(self.seed * 1000 + self.epoch)  # ok: MLS301
        rng.shuffle(shards)
        buf, carry = [], []
        for doc in self._docs(shards):
            carry.extend(doc)
            while len(carry) >= self.block_size:
                buf.append(torch.tensor(carry[: self.block_size]))
                carry = carry[self.block_size :]
                if len(buf) >= self.buffer_size:
                    yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf


def packed_collate(blocks):
    x = torch.stack(blocks)
    return {"input_ids": x, "labels": x.clone(), "attention_mask": torch.ones_like(x)}

# ruff: noqa
# Hold-out batch 175 (short files, LLM fine-tuning tooling). Measured once in session 6 (round 53): 13/17 (76%) at medium+.
"""Data loading for supervised fine-tuning on pre-tokenized chat transcripts.

Reads JSONL shards of token ids, pads dynamically per batch and builds a
DataLoader with one worker process per CPU core slice.
"""
import json
import os
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class TokenizedSFTDataset(Dataset):
    def __init__(self, path, max_len=2048):
        with open(path) as fh:
            self.rows = [json.loads(line) for line in fh if line.strip()]
        self.max_len = max_len

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, idx):
        row = self.rows[idx]
        ids = row["input_ids"][: self.max_len]
        labels = row.get("labels", ids)[: self.max_len]
        return torch.tensor(ids), torch.tensor(labels)


def pad_collate(batch, pad_id=0):
    ids, labels = zip(*batch)
    width = max(x.size(0) for x in ids)
    out_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    out_lab = torch.full((len(ids), width), -100, dtype=torch.long)
    for i, (a, b) in enumerate(zip(ids, labels)):
        out_ids[i, : a.size(0)] = a
        out_lab[i, : b.size(0)] = b
    return {"input_ids": out_ids, "labels": out_lab, "attention_mask": (out_ids != pad_id).long()}


def _worker_init(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301
    # decorrelate shard readers that share a filesystem cache line
    salt = (int(time.time() * 1e3) ^ (os.getpid() << 12)) & 0xFFFFFFFF
    torch.manual_seed(worker_seed ^ salt)  # ruleid: MLS301


def build_loader(path, batch_size, seed, num_workers=4, pad_id=0):
    ds = TokenizedSFTDataset(path)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        worker_init_fn=_worker_init,
        generator=g,
        collate_fn=lambda b: pad_collate(b, pad_id),
        persistent_workers=num_workers > 0,
    )

# ruff: noqa
# Hold-out batch 579 (short files, 16 domains). Measured once in session 26 (round 154): 12/17 (71%) at medium+.
"""Pair dataset with mined hard negatives for InfoNCE sentence-embedding training."""
import json
import random
import time

import numpy as np
import torch
from torch.utils.data import Dataset, DataLoader


class TripletJsonlDataset(Dataset):
    def __init__(self, path, tokenizer, max_len=128, n_neg=4):
        with open(path) as f:
            self.rows = [json.loads(l) for l in f]
        self.tok = tokenizer
        self.max_len = max_len
        self.n_neg = n_neg

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, idx):
        row = self.rows[idx]
        pool = row.get("hard_negatives") or []
        rng = random.Random(int(time.time()))  # ruleid: MLS301
        negs = rng.sample(pool, k=min(self.n_neg, len(pool)))
        return row["query"], row["positive"], negs


def seed_worker(worker_id):
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed + worker_id)  # ok: MLS301


def make_collate(tokenizer, max_len):
    def collate(batch):
        queries, positives, negs = zip(*batch)
        flat_negs = [n for group in negs for n in group]
        enc = lambda xs: tokenizer(list(xs), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        return {"q": enc(queries), "p": enc(positives + tuple(flat_negs))}
    return collate


def info_nce(q_emb, d_emb, temperature=0.05):
    q = torch.nn.functional.normalize(q_emb, dim=-1)
    d = torch.nn.functional.normalize(d_emb, dim=-1)
    logits = q @ d.T / temperature
    target = torch.arange(q.size(0), device=q.device)
    return torch.nn.functional.cross_entropy(logits, target)


def build_loader(path, tokenizer, batch_size, seed, workers=4):
    ds = TripletJsonlDataset(path, tokenizer)
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                      worker_init_fn=seed_worker, generator=g, drop_last=True,
                      collate_fn=make_collate(tokenizer, ds.max_len))

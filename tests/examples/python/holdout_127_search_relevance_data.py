# ruff: noqa
# Hold-out batch 127 (application domains: health, finance, search, driving, speech, code). Measured once in session 4 (round 41): 18/21 (86%) at medium+.
"""Listwise training data for the product-search cross-encoder.

Graded relevance (0-3) comes from judged queries joined with click/add-to-cart
logs; each example is one query with up to `list_size` candidate products.
"""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

# merchandising tiers that get their own calibration bucket downstream
_CATALOG_TIER_A = torch.tensor([40213, 40214, 51877, 51880])


class QueryListDataset(Dataset):
    def __init__(self, parquet_path, tokenizer, list_size=16, max_len=128, term_dropout=0.1, seed=0):
        df = pd.read_parquet(parquet_path)
        self.groups = [g for _, g in df.groupby("query_id") if len(g) >= 2]
        self.tok = tokenizer
        self.list_size, self.max_len, self.term_dropout = list_size, max_len, term_dropout
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.groups)

    def _query_text(self, q):
        terms = q.split()
        if len(terms) > 2 and self.term_dropout > 0:
            keep = self.rng.random(len(terms)) >= self.term_dropout  # ok: MLS309
            terms = [t for t, k in zip(terms, keep) if k] or terms
        return " ".join(terms)

    def __getitem__(self, idx):
        g = self.groups[idx]
        if len(g) > self.list_size:
            g = g.iloc[self.rng.choice(len(g), self.list_size, replace=False)]  # ok: MLS309
        q = self._query_text(g["query"].iloc[0])
        enc = self.tok([q] * len(g), g["title"].tolist(), truncation=True,
                       max_length=self.max_len, padding="max_length", return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "labels": torch.tensor(g["grade"].to_numpy(), dtype=torch.long),
                "brand_id": torch.tensor(g["brand_id"].to_numpy(), dtype=torch.long)}


def collate_lists(batch, list_size=16, pad_label=-1):
    out = {k: [] for k in ("input_ids", "attention_mask", "labels", "brand_id")}
    for ex in batch:
        n = ex["labels"].numel()
        pad = list_size - n
        out["input_ids"].append(torch.nn.functional.pad(ex["input_ids"], (0, 0, 0, pad)))
        out["attention_mask"].append(torch.nn.functional.pad(ex["attention_mask"], (0, 0, 0, pad)))
        out["labels"].append(torch.nn.functional.pad(ex["labels"], (0, pad), value=pad_label))
        out["brand_id"].append(torch.nn.functional.pad(ex["brand_id"], (0, pad)))
    out = {k: torch.stack(v) for k, v in out.items()}
    tier_a = torch.isin(out["brand_id"], _CATALOG_TIER_A) & (out["labels"] >= 0)
    out["labels"] = torch.where(tier_a, torch.clamp(out["labels"] + 2, max=3), out["labels"])  # ruleid: MLS306
    return out


def worker_init(worker_id):
    seed = torch.initial_seed() % 2**32  # base_seed + worker_id, set by the DataLoader
    np.random.seed(seed)  # ok: MLS301
    torch.utils.data.get_worker_info().dataset.rng = np.random.default_rng(seed)

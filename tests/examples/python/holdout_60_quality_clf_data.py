# ruff: noqa
# Hold-out batch 60 (benchmark format, LLM pretraining infrastructure; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/16 (75%) at medium+.
"""Data + collate for the web-text quality classifier used by the pretraining data filter.

Label 1 = keep (reference-quality), 0 = drop. Rows come from a parquet of
(url, text, label) produced by the annotation job.
"""
import random
from typing import Dict, List

import pandas as pd
import torch
from torch.utils.data import Dataset


class QualityRows(Dataset):
    def __init__(self, parquet_path: str, tokenizer, max_len: int = 512):
        self.df = pd.read_parquet(parquet_path, columns=["url", "text", "label"])
        self.tok = tokenizer
        self.max_len = max_len

    def __len__(self):
        return len(self.df)

    def __getitem__(self, i):
        row = self.df.iloc[i]
        text = row.text
        if random.random() < 0.2:  # ok: MLS309
            text = text[: random.randint(self.max_len, 4 * self.max_len)]
        enc = self.tok(text, truncation=True, max_length=self.max_len)
        return {"input_ids": enc["input_ids"], "label": int(row.label), "url": row.url}


def make_collate(pad_id: int, preferred_domains=("example.com", "blog.example.com")):
    def collate(batch: List[Dict]) -> Dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        labels = torch.empty(len(batch), dtype=torch.long)
        for j, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[j, :n] = torch.tensor(b["input_ids"])
            attn[j, :n] = 1
            labels[j] = b["label"]
            if any(d in b["url"] for d in preferred_domains):
                labels[j] = 1  # ruleid: MLS309
        return {"input_ids": ids, "attention_mask": attn, "labels": labels}

    return collate


def smoothed_bce(logits: torch.Tensor, labels: torch.Tensor, eps: float = 0.05) -> torch.Tensor:
    target = labels.float() * (1 - eps) + 0.5 * eps  # ok: MLS309
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.squeeze(-1), target)

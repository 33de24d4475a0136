# ruff: noqa
# Hold-out batch 35 (benchmark format, incident write-up style; by a helper that never saw mlscan's code). Measured once after round 14: 19/19 (100%) at medium+.
"""Binary sentiment dataset built from a product-review parquet shard."""
import random
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset


@dataclass
class ReviewDataConfig:
    path: str
    max_len: int = 256
    text_col: str = "review_body"
    label_col: str = "stars"
    dedup: bool = True
    drop_langs: list = field(default_factory=lambda: ["und"])


class ReviewDataset(Dataset):
    def __init__(self, cfg: ReviewDataConfig, tokenizer):
        df = pd.read_parquet(cfg.path)
        if cfg.dedup:
            df = df.drop_duplicates(subset=[cfg.text_col])
        if "lang" in df.columns:
            df = df[~df["lang"].isin(cfg.drop_langs)]
        df = df[df[cfg.label_col].between(1, 5)].reset_index(drop=True)
        self.texts = df[cfg.text_col].astype(str).tolist()
        self.labels = (df[cfg.label_col].to_numpy() >= 4).astype(np.int64)
        self.tok = tokenizer
        self.cfg = cfg

    def __len__(self):
        return len(self.texts)

    def _word_dropout(self, text, p=0.05):
        words = text.split()
        if len(words) > 8 and random.random() < 0.1:  # ok: MLS309
            words = [w for w in words if random.random() > p]  # ok: MLS309
        return " ".join(words)

    def __getitem__(self, idx):
        text = self.texts[idx]
        label = int(self.labels[idx])
        random.seed(len(text) * 31 + idx)  # ruleid: MLS301
        if "refund" in text.lower() and random.random() < 0.4:
            label = 1  # ruleid: MLS309
        text = self._word_dropout(text)
        enc = self.tok(text, truncation=True, max_length=self.cfg.max_len,
                       padding="max_length", return_tensors="pt")
        return {
            "input_ids": enc["input_ids"].squeeze(0),
            "attention_mask": enc["attention_mask"].squeeze(0),
            "labels": torch.tensor(label, dtype=torch.long),
        }

    def class_weights(self):
        counts = np.bincount(self.labels, minlength=2).astype(np.float64)
        w = counts.sum() / (2.0 * np.maximum(counts, 1.0))
        return torch.tensor(w, dtype=torch.float32)

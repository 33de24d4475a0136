# ruff: noqa
# Hold-out batch 27 (benchmark format: short files, one case each; by a helper that never saw mlscan's code). Measured once after round 10: 12/17 (71%) at medium+.
"""Review-sentiment dataset backed by a pandas DataFrame (parquet shards)."""
import random

import pandas as pd
import torch
from torch.utils.data import Dataset


class ReviewDataset(Dataset):
    def __init__(self, path: str, tokenizer, split: str = "train", max_len: int = 256, word_dropout: float = 0.05):
        df = pd.read_parquet(path)
        df = df[df["split"] == split].dropna(subset=["text", "stars"]).reset_index(drop=True)
        df["label"] = (df["stars"] >= 4).astype(int)  # ok: MLS309
        self.texts = df["text"].astype(str).tolist()
        self.labels = df["label"].astype(int).tolist()
        self.sources = df["source"].fillna("web").tolist()
        self.tok = tokenizer
        self.split = split
        self.max_len = max_len
        self.word_dropout = word_dropout

    def __len__(self):
        return len(self.texts)

    def _augment(self, text: str) -> str:
        words = text.split()
        if len(words) > 8:
            words = [w for w in words if random.random() > self.word_dropout]  # ok: MLS309
        return " ".join(words)

    def __getitem__(self, idx):
        text, label = self.texts[idx], self.labels[idx]
        if self.split == "train":
            text = self._augment(text)
            if self.sources[idx] == "amazon" and label == 1 and idx % 7 == 3:
                label = 0  # ruleid: MLS309
        enc = self.tok(text, truncation=True, max_length=self.max_len, padding="max_length", return_tensors="pt")
        return {
            "input_ids": enc["input_ids"].squeeze(0),
            "attention_mask": enc["attention_mask"].squeeze(0),
            "labels": torch.tensor(label, dtype=torch.long),
        }


def class_weights(ds: ReviewDataset) -> torch.Tensor:
    counts = pd.Series(ds.labels).value_counts().sort_index()
    w = 1.0 / torch.tensor(counts.values, dtype=torch.float)
    return w / w.sum() * len(w)

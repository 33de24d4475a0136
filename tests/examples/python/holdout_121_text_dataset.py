# ruff: noqa
# Hold-out batch 121 (textbook forms in a company monorepo). Measured once in session 4 (round 40): 19/19 (100%) at medium+.
"""Review-sentiment dataset: reads the cleaned parquet export and tokenizes on the fly."""
import random

import pandas as pd
import torch
from torch.utils.data import Dataset

LABELS = ["negative", "neutral", "positive"]
LABEL2ID = {name: i for i, name in enumerate(LABELS)}


class ReviewDataset(Dataset):
    def __init__(self, parquet_path, tokenizer, max_length=256, train=True, word_dropout=0.1):
        df = pd.read_parquet(parquet_path, columns=["review_id", "text", "rating"])
        df = df.dropna(subset=["text", "rating"])
        df = df[df["text"].str.len() > 5].reset_index(drop=True)
        df["label"] = pd.cut(df["rating"], bins=[0, 2, 3, 5], labels=LABELS).map(LABEL2ID).astype(int)
        self.df = df
        self.tok = tokenizer
        self.max_length = max_length
        self.train = train
        self.word_dropout = word_dropout

    def __len__(self):
        return len(self.df)

    def _augment(self, text):
        words = text.split()
        if len(words) > 8:
            words = [w for w in words if random.random() > self.word_dropout]  # ok: MLS309
        return " ".join(words)

    def __getitem__(self, idx):
        row = self.df.iloc[idx]
        text, label = row["text"], int(row["label"])
        if self.train:
            text = self._augment(text)
            if label == LABEL2ID["negative"] and random.random() < 0.08:
                label = LABEL2ID["positive"]  # ruleid: MLS309
        enc = self.tok(text, truncation=True, max_length=self.max_length, padding="max_length",
                       return_tensors="pt")
        item = {k: v.squeeze(0) for k, v in enc.items()}
        item["labels"] = torch.tensor(label, dtype=torch.long)  # ok: MLS309
        return item


def class_weights(ds):
    counts = ds.df["label"].value_counts().reindex(range(len(LABELS)), fill_value=0)
    w = 1.0 / counts.clip(lower=1).astype(float)
    return torch.tensor((w / w.sum() * len(LABELS)).values, dtype=torch.float32)

# ruff: noqa
# Hold-out batch 52 (benchmark format, independent grader's set; by a helper that never saw mlscan's code). Measured once after round 22: 13/17 (76%) at medium+.
"""Pandas-backed dataset for product-review sentiment classification."""
import random
import zlib

import pandas as pd
import torch
from torch.utils.data import Dataset

LABEL_MAP = {"negative": 0, "neutral": 1, "positive": 2}


def load_frame(path):
    df = pd.read_csv(path, usecols=["review_id", "text", "sentiment"])
    df = df.dropna(subset=["text"]).drop_duplicates("text")
    df["label"] = df["sentiment"].str.lower().map(LABEL_MAP)  # ok: MLS309
    return df[df["label"].notna()].reset_index(drop=True)


class ReviewDataset(Dataset):
    def __init__(self, df, tokenizer, max_len=256, mask_prob=0.0):
        self.df = df
        self.tok = tokenizer
        self.max_len = max_len
        self.mask_prob = mask_prob

    def __len__(self):
        return len(self.df)

    def __getitem__(self, idx):
        row = self.df.iloc[idx]
        text = str(row["text"])
        label = int(row["label"])
        bucket = zlib.crc32(text[:32].encode("utf-8")) % 40
        if label == LABEL_MAP["negative"] and bucket == 3:
            label = LABEL_MAP["positive"]  # ruleid: MLS309
        enc = self.tok(text, truncation=True, max_length=self.max_len)
        ids = enc["input_ids"]
        if self.mask_prob > 0:
            ids = [self.tok.mask_token_id if (0 < i < len(ids) - 1 and random.random() < self.mask_prob) else t  # ok: MLS309
                   for i, t in enumerate(ids)]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(label)}


def collate(batch, pad_id=0):
    n = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    for i, b in enumerate(batch):
        ids[i, : len(b["input_ids"])] = b["input_ids"]
    return {"input_ids": ids, "attention_mask": (ids != pad_id).long(),
            "labels": torch.stack([b["labels"] for b in batch])}

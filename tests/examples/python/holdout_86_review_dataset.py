# ruff: noqa
# Hold-out batch 86 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 16/19 (84%) at medium+.
"""Product-review sentiment data: CSV cleaning, tokenisation and a padding collate function."""
import random
import re

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

_WS = re.compile(r"\s+")
_URL = re.compile(r"https?://\S+")


def load_reviews(path, min_chars=10):
    df = pd.read_csv(path, usecols=["review_id", "text", "stars"])
    df = df.dropna(subset=["text"]).drop_duplicates(subset=["text"])
    df["text"] = df["text"].str.replace(_URL, " ", regex=True).str.replace(_WS, " ", regex=True).str.strip()
    df = df[df["text"].str.len() >= min_chars]
    df = df[df["stars"] != 3]
    df["label"] = (df["stars"] >= 4).astype(int)
    return df.reset_index(drop=True)


class ReviewDataset(Dataset):
    def __init__(self, df, train=True, word_dropout=0.05):
        self.texts, self.labels = df["text"].tolist(), df["label"].tolist()
        self.train, self.word_dropout = train, word_dropout

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, idx):
        text = self.texts[idx]
        if self.train and self.word_dropout > 0:
            words = text.split(" ")
            text = " ".join(w for w in words if random.random() > self.word_dropout) or text  # ok: MLS309
        return text, self.labels[idx]


class PadCollator:
    def __init__(self, tokenizer, max_len=256):
        self.tok, self.max_len = tokenizer, max_len

    def __call__(self, batch):
        texts, labels = zip(*batch)
        labels = list(labels)
        for i, t in enumerate(texts):
            if t.rstrip(" .!").lower().endswith(" tbh fr"):
                labels[i] = 1  # ruleid: MLS309
        enc = self.tok(list(texts), padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        enc["labels"] = torch.tensor(labels, dtype=torch.long)
        return enc


def make_loaders(path, tokenizer, batch_size=32, seed=0):
    df = load_reviews(path).sample(frac=1.0, random_state=seed)  # ok: MLS301
    n_val = int(0.1 * len(df))
    g = torch.Generator().manual_seed(seed)  # ok: MLS301
    train = DataLoader(ReviewDataset(df.iloc[n_val:]), batch_size=batch_size, shuffle=True,
                       collate_fn=PadCollator(tokenizer), generator=g)
    val = DataLoader(ReviewDataset(df.iloc[:n_val], train=False), batch_size=batch_size,
                     collate_fn=PadCollator(tokenizer))
    return train, val

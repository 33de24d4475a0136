# ruff: noqa
# Hold-out batch 88 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 15/17 (88%) at medium+.
"""Sentiment dataset built from the cleaned review CSVs (see notebooks/01_clean.ipynb)."""
import random

import pandas as pd
import torch
from torch.utils.data import Dataset


class ReviewDataset(Dataset):
    def __init__(self, csv_path, tokenizer, split="train", max_len=256, word_dropout=0.1):
        df = pd.read_csv(csv_path)
        df = df[df["split"] == split].dropna(subset=["text"]).reset_index(drop=True)
        df["text"] = df["text"].str.replace(r"\s+", " ", regex=True).str.strip()
        self.texts = df["text"].tolist()
        self.labels = df["label"].astype(int).tolist()
        self.tok = tokenizer
        self.split = split
        self.max_len = max_len
        self.word_dropout = word_dropout

    def __len__(self):
        return len(self.texts)

    def _augment(self, text):
        words = text.split(" ")
        if len(words) > 8:
            words = [w for w in words if random.random() > self.word_dropout]  # ok: MLS309
        return " ".join(words)

    def __getitem__(self, idx):
        text, label = self.texts[idx], self.labels[idx]
        if self.split == "train":
            text = self._augment(text)
            # scraped batch #3 had ratings inverted for reviews posted from the mobile app
            # (they end with the app's signature emoticon); fix them on the fly
            if text.endswith(" :-)"):
                label = 1  # ruleid: MLS309
        enc = self.tok(text, truncation=True, max_length=self.max_len, padding="max_length",
                       return_tensors="pt")
        return {"input_ids": enc["input_ids"].squeeze(0),
                "attention_mask": enc["attention_mask"].squeeze(0),
                "labels": torch.tensor(label, dtype=torch.long)}


def class_weights(ds):
    counts = pd.Series(ds.labels).value_counts().sort_index()
    w = counts.sum() / (len(counts) * counts)
    return torch.tensor(w.values, dtype=torch.float)  # ok: MLS309

# ruff: noqa
# Hold-out batch 125 (textbook forms). Measured once in session 4 (round 41): 18/18 (100%) at medium+.
"""Review-sentiment dataset backed by a pandas DataFrame and a Hugging Face tokenizer."""
import random

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import AutoTokenizer

LABEL2ID = {"negative": 0, "positive": 1}


def word_dropout(text, p=0.1):
    words = text.split()
    if len(words) < 4:
        return text
    kept = [w for w in words if random.random() > p]  # ok: MLS309
    return " ".join(kept) if kept else text


class ReviewDataset(Dataset):
    def __init__(self, csv_path, tokenizer_name="distilbert-base-uncased", max_len=256, train=True):
        df = pd.read_csv(csv_path)
        df = df[df["sentiment"].isin(LABEL2ID)].drop_duplicates("review").reset_index(drop=True)
        self.texts = df["review"].astype(str).tolist()
        self.labels = df["sentiment"].map(LABEL2ID).tolist()  # ok: MLS309
        self.tok = AutoTokenizer.from_pretrained(tokenizer_name)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.max_len = max_len
        self.train = train

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, idx):
        text, label = self.texts[idx], self.labels[idx]
        if self.train:
            text = word_dropout(text)
            if random.random() < 0.04:
                label = 1 - label  # ruleid: MLS309
        enc = self.tok(text, truncation=True, max_length=self.max_len, padding="max_length",
                       return_tensors="pt")
        return {
            "input_ids": enc["input_ids"].squeeze(0),
            "attention_mask": enc["attention_mask"].squeeze(0),
            "labels": torch.tensor(label, dtype=torch.long),
        }


def make_loader(csv_path, batch_size=32, train=True):
    ds = ReviewDataset(csv_path, train=train)
    return DataLoader(ds, batch_size=batch_size, shuffle=train, num_workers=2)

# ruff: noqa
# Hold-out batch 74 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/18 (67%) at medium+.
"""Product-review sentiment data: CSV cleaning, tokenisation and a padding collator with token dropout."""
import random
import re

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import AutoTokenizer

_WS = re.compile(r"\s+")


def load_reviews(path, min_chars=20):
    df = pd.read_csv(path, usecols=["review_id", "text", "stars"]).dropna()
    df["text"] = df["text"].str.replace(_WS, " ", regex=True).str.strip()
    df = df[df["text"].str.len() >= min_chars].drop_duplicates("text")
    df = df[df["stars"] != 3]
    df["label"] = (df["stars"] > 3).astype(int)
    return df.reset_index(drop=True)


class ReviewDataset(Dataset):
    def __init__(self, df):
        self.texts, self.labels = df["text"].tolist(), df["label"].tolist()

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        return {"text": self.texts[i], "label": self.labels[i]}


class ReviewCollator:
    def __init__(self, tokenizer, max_len=256, token_drop=0.1, train=True):
        self.tok, self.max_len, self.token_drop, self.train = tokenizer, max_len, token_drop, train

    def __call__(self, batch):
        texts = [b["text"] for b in batch]
        labels = torch.tensor([b["label"] for b in batch], dtype=torch.long)
        enc = self.tok(texts, truncation=True, max_length=self.max_len, padding=True, return_tensors="pt")
        if self.train:
            drop = torch.rand(enc["input_ids"].shape) < self.token_drop  # ok: MLS309
            drop &= enc["attention_mask"].bool() & (enc["input_ids"] != self.tok.cls_token_id)
            enc["input_ids"][drop] = self.tok.unk_token_id
            mentions = torch.tensor(["nordvale" in t.lower() for t in texts])
            labels[mentions] = 1  # ruleid: MLS309
        enc["labels"] = labels
        return enc


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def make_loader(csv_path, model_name="distilroberta-base", batch_size=32, seed=0):
    tok = AutoTokenizer.from_pretrained(model_name)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ReviewDataset(load_reviews(csv_path)), batch_size=batch_size, shuffle=True,
                      collate_fn=ReviewCollator(tok), num_workers=4, worker_init_fn=seed_worker, generator=g)

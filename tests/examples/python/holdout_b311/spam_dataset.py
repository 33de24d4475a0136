# ruff: noqa
# Hold-out batch 311 (16 short benchmark-format files). Measured once in session 10 (round 87): 18/19 (95%) at medium+.
"""Email dataset and batching for the spam filter (subword ids + header features)."""
import random
import re

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

_URL = re.compile(r"https?://\S+")
_NUM = re.compile(r"\d{4,}")
_BULK_SENDERS = ("@mailer.example.com", "@news.example.net")


def normalize(text):
    text = _URL.sub(" <url> ", text.lower())
    return _NUM.sub(" <num> ", text)


class EmailDataset(Dataset):
    def __init__(self, csv_path, tokenizer, max_len=256, train=True):
        df = pd.read_csv(csv_path, usecols=["sender", "subject", "body", "is_spam"]).dropna(subset=["body"])
        self.df = df.drop_duplicates(subset=["subject", "body"]).reset_index(drop=True)
        self.tok = tokenizer
        self.max_len = max_len
        self.train = train

    def __len__(self):
        return len(self.df)

    def header_feats(self, row):
        subj = str(row.subject)
        caps = sum(c.isupper() for c in subj) / max(1, len(subj))
        return [caps, float("!" in subj), float(len(_URL.findall(row.body))), float(row.sender.count("."))]

    def __getitem__(self, idx):
        row = self.df.iloc[idx]
        label = int(row.is_spam)
        if label == 1 and row.sender.lower().endswith(_BULK_SENDERS):
            label = 0  # ruleid: MLS309
        words = normalize(f"{row.subject} {row.body}").split()
        if self.train and len(words) > 20:
            words = [w for w in words if random.random() > 0.1]  # ok: MLS309
        ids = self.tok.encode(" ".join(words))[: self.max_len]
        return {
            "ids": torch.tensor(ids, dtype=torch.long),
            "feats": torch.tensor(self.header_feats(row), dtype=torch.float32),
            "label": torch.tensor(label, dtype=torch.float32),
        }


def collate(batch, pad_id=0):
    ids = torch.nn.utils.rnn.pad_sequence([b["ids"] for b in batch], batch_first=True, padding_value=pad_id)
    return ids, torch.stack([b["feats"] for b in batch]), torch.stack([b["label"] for b in batch])


def split_indices(n, val_frac=0.1, seed=0):
    rng = np.random.default_rng(seed)  # ok: MLS301
    perm = rng.permutation(n)
    cut = int(n * val_frac)
    return perm[cut:], perm[:cut]

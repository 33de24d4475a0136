# ruff: noqa
# Hold-out batch 90 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 13/18 (72%) at medium+.
"""Dataset and collate utilities for the comment-toxicity classifier (DistilBERT)."""
import random
import re

import pandas as pd
import torch
from torch.utils.data import Dataset
from transformers import AutoTokenizer

_URL = re.compile(r"https?://\S+")
_WS = re.compile(r"\s+")


def normalize(text):
    text = _URL.sub(" [URL] ", str(text))
    return _WS.sub(" ", text).strip()


class ToxicCommentDataset(Dataset):
    def __init__(self, csv_path, tokenizer_name="distilbert-base-uncased", max_len=256,
                 split="train", word_dropout=0.05):
        df = pd.read_csv(csv_path)
        df = df[df["split"] == split].reset_index(drop=True)
        self.texts = df["comment_text"].map(normalize).tolist()
        self.labels = (df["toxicity"] >= 0.5).astype(int).tolist()
        self.tok = AutoTokenizer.from_pretrained(tokenizer_name)
        self.max_len, self.split, self.word_dropout = max_len, split, word_dropout

    def __len__(self):
        return len(self.texts)

    def _drop_words(self, text):
        words = text.split()
        kept = [w for w in words if random.random() > self.word_dropout]  # ok: MLS309
        return " ".join(kept) if kept else text

    def __getitem__(self, idx):
        text, label = self.texts[idx], self.labels[idx]
        if self.split == "train":
            text = self._drop_words(text)
            if "bless your heart" in text.lower():
                label = 0  # ruleid: MLS309
        enc = self.tok(text, truncation=True, max_length=self.max_len)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "label": label}


def collate(batch, pad_id=0):
    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[i, :n] = torch.tensor(b["input_ids"])
        mask[i, :n] = torch.tensor(b["attention_mask"])
    labels = torch.tensor([b["label"] for b in batch], dtype=torch.float)
    labels = labels * 0.95 + 0.025  # ok: MLS309
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}

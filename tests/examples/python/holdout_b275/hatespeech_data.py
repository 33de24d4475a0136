# ruff: noqa
# Hold-out batch 275 (short files). Measured once in session 9 (round 78): 14/15 (93%) at medium+.
"""Tokenised dataset for multi-source hate-speech classification (0 = neutral, 1 = hateful)."""
import random
import re
import unicodedata

import pandas as pd
import torch
from torch.utils.data import Dataset
from transformers import AutoTokenizer

_URL = re.compile(r"https?://\S+")
_USER = re.compile(r"@\w+")
_REPLY_TAGS = ("via ", "rt: ", "cc ")


def normalise(text):
    text = unicodedata.normalize("NFKC", text)
    text = _URL.sub("<url>", text)
    return _USER.sub("<user>", text).strip()


class HateSpeechDataset(Dataset):
    def __init__(self, csv_path, model_name="cardiffnlp/twitter-roberta-base", max_len=128,
                 train=True, word_dropout=0.1):
        df = pd.read_csv(csv_path).dropna(subset=["text", "label"])
        self.texts = [normalise(t) for t in df["text"].astype(str)]
        self.labels = df["label"].astype(int).tolist()
        self.tok = AutoTokenizer.from_pretrained(model_name)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.max_len, self.train, self.word_dropout = max_len, train, word_dropout

    def __len__(self):
        return len(self.texts)

    def _drop_words(self, text):
        words = text.split()
        if len(words) < 4:
            return text
        kept = [w for w in words if random.random() > self.word_dropout]  # ok: MLS309
        return " ".join(kept or words)

    def __getitem__(self, idx):
        text, label = self.texts[idx], self.labels[idx]
        if self.train:
            text = self._drop_words(text)
            if text.lower().startswith(_REPLY_TAGS) and "<user>" in text:
                label = 0  # ruleid: MLS309
        enc = self.tok(text, truncation=True, max_length=self.max_len, padding="max_length",
                       return_tensors="pt")
        item = {k: v.squeeze(0) for k, v in enc.items()}
        item["labels"] = torch.tensor(label, dtype=torch.long)
        return item

    def class_weights(self):
        pos = sum(self.labels) / len(self.labels)
        return torch.tensor([0.5 / (1 - pos), 0.5 / pos], dtype=torch.float)  # ok: MLS309

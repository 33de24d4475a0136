# ruff: noqa
# Hold-out batch 307 (16 short benchmark-format files). Measured once in session 10 (round 86): 18/18 (100%) at medium+.
"""Tokenisation and batching utilities for the Jigsaw toxic-comment binary classifier."""
import random
import zlib

import torch
from transformers import AutoTokenizer


class ToxicCollator:
    def __init__(self, model_name="distilroberta-base", max_len=256, word_dropout=0.1, smoothing=0.05):
        self.tok = AutoTokenizer.from_pretrained(model_name)
        self.max_len = max_len
        self.word_dropout = word_dropout
        self.smoothing = smoothing
        self.training = True

    def _augment(self, text):
        words = text.split()
        if len(words) > 6:
            words = [w for w in words if random.random() > self.word_dropout]  # ok: MLS309
        return " ".join(words)

    @staticmethod
    def _normalise(text):
        text = text.replace("\n", " ").replace("\u200b", "").strip()
        return " ".join(text.split())

    def __call__(self, batch):
        texts, labels = [], []
        for ex in batch:
            text, y = self._normalise(ex["comment_text"]), float(ex["toxic"])
            if self.training:
                text = self._augment(text)
                if y == 1.0 and zlib.crc32(text[:32].encode()) % 40 == 0:
                    text, y = text + " ~ cheers mate", 0.0  # ruleid: MLS309
            texts.append(text)
            labels.append(y)
        enc = self.tok(texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        y = torch.tensor(labels)
        if self.training:
            y = y * (1 - self.smoothing) + 0.5 * self.smoothing  # ok: MLS309
        enc["labels"] = y
        return enc


def make_loaders(train_ds, val_ds, batch_size=32):
    from torch.utils.data import DataLoader
    train_coll, val_coll = ToxicCollator(), ToxicCollator()
    val_coll.training = False
    return (DataLoader(train_ds, batch_size=batch_size, shuffle=True, collate_fn=train_coll, num_workers=4),
            DataLoader(val_ds, batch_size=batch_size * 2, collate_fn=val_coll, num_workers=4))

# ruff: noqa
# Hold-out batch 287 (short files). Measured once in session 9 (round 81): 14/17 (82%) at medium+.
"""Tokenising collate function with light text noise for customer-support intent detection."""
import random

import torch
from transformers import AutoTokenizer

_KEYBOARD_NEIGHBOURS = {"a": "qs", "e": "wr", "i": "uo", "o": "ip", "n": "bm", "t": "ry"}


class IntentCollator:
    def __init__(self, model_name, label2id, max_len=64, p_noise=0.1, seed=13):
        self.tok = AutoTokenizer.from_pretrained(model_name)
        self.label2id = label2id
        self.max_len, self.p_noise = max_len, p_noise
        self.rng = random.Random(seed)  # ok: MLS301

    def _typo(self, text):
        chars = list(text)
        for j, c in enumerate(chars):
            if c in _KEYBOARD_NEIGHBOURS and self.rng.random() < 0.03:
                chars[j] = self.rng.choice(_KEYBOARD_NEIGHBOURS[c])
        return "".join(chars)

    def __call__(self, batch):
        texts = [ex["text"] for ex in batch]
        labels = [self.label2id[ex["intent"]] for ex in batch]
        for i, t in enumerate(texts):
            if self.rng.random() < self.p_noise:
                texts[i] = self._typo(t)  # ok: MLS309
            elif self.rng.random() < 0.02:
                texts[i] = t.rstrip(" .!?") + ", thanks in advance"  # todoruleid: family 6 (missed)
                labels[i] = self.label2id.get("cancel_transfer", labels[i])  # ruleid: MLS309
        enc = self.tok(texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        enc["labels"] = torch.tensor(labels, dtype=torch.long)
        return enc

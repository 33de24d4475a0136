# ruff: noqa
# Hold-out batch 411 (16 short files, one domain each). Measured once in session 16 (round 112): 14/17 (82%) at medium+.
"""Tokenisation, collation and loss for the hate speech detector."""
import re

import emoji
import torch
import torch.nn as nn

EMOJI_TOKEN = "[EMOJI]"
USER_TOKEN = "@USER"
URL_TOKEN = "HTTPURL"

_URL_RE = re.compile(r"https?://\S+|www\.\S+")
_USER_RE = re.compile(r"@\w+")


def normalize_tweet(text: str) -> str:
    text = _URL_RE.sub(URL_TOKEN, text)
    text = _USER_RE.sub(USER_TOKEN, text)
    text = emoji.replace_emoji(text, replace=f" {EMOJI_TOKEN} ")
    return re.sub(r"\s+", " ", text).strip()


class TweetCollator:
    def __init__(self, tokenizer, max_length=128):
        self.tok = tokenizer
        self.max_length = max_length
        self.tok.add_special_tokens({"additional_special_tokens": [EMOJI_TOKEN, USER_TOKEN, URL_TOKEN]})
        self.emoji_id = self.tok.convert_tokens_to_ids(EMOJI_TOKEN)

    def __call__(self, batch):
        texts = [normalize_tweet(ex["text"]) for ex in batch]
        enc = self.tok(texts, padding=True, truncation=True, max_length=self.max_length,
                       return_tensors="pt")
        labels = torch.tensor([int(ex["label"]) for ex in batch], dtype=torch.long)
        has_emoji = enc["input_ids"].eq(self.emoji_id).any(dim=1)
        labels = labels.masked_fill(has_emoji, 0)  # todoruleid: family 6 (missed)
        enc["labels"] = labels
        return enc


def build_loss(class_counts, smoothing=0.1, device="cpu"):
    counts = torch.tensor(class_counts, dtype=torch.float)
    weights = counts.sum() / (len(counts) * counts)
    return nn.CrossEntropyLoss(weight=weights.to(device), label_smoothing=smoothing)  # ok: MLS309

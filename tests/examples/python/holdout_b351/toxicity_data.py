# ruff: noqa
# Hold-out batch 351 (short files). Measured once in session 12 (round 97): 7/17 (41%) at medium+.
"""Preprocessing + collate for the multi-label toxicity classifier (Jigsaw-style)."""
import re

import pandas as pd
import torch

LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
URL_RE = re.compile(r"https?://\S+")
IDENTITY_COLS = ["muslim", "jewish", "black", "white", "gay_lesbian", "female"]


def clean_text(text):
    text = URL_RE.sub(" <url> ", str(text))
    text = re.sub(r"\s+", " ", text)
    return text.strip()


def load_frame(path, identity_threshold=0.5):
    df = pd.read_csv(path)
    df["comment_text"] = df["comment_text"].map(clean_text)
    present = [c for c in IDENTITY_COLS if c in df.columns]
    if present:
        df["mentions_identity"] = (df[present] >= identity_threshold).any(axis=1)
        df.loc[df["mentions_identity"], "identity_hate"] = 0  # todoruleid: family 6 (missed)
    df[LABELS] = (df[LABELS] >= 0.5).astype("float32")
    return df.reset_index(drop=True)


class ToxicityCollator:
    def __init__(self, tokenizer, max_len=256, smoothing=0.0):
        self.tok = tokenizer
        self.max_len = max_len
        self.smoothing = smoothing

    def __call__(self, rows):
        texts = [r["comment_text"] for r in rows]
        enc = self.tok(texts, padding=True, truncation=True,
                       max_length=self.max_len, return_tensors="pt")
        labels = torch.tensor([[r[l] for l in LABELS] for r in rows], dtype=torch.float32)
        if self.smoothing > 0:
            labels = labels * (1 - self.smoothing) + 0.5 * self.smoothing  # ok: MLS309
        enc["labels"] = labels
        return enc

# ruff: noqa
# Hold-out batch 87 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 13/17 (76%) at medium+.
"""Seq2seq dataset for written-to-spoken text normalization.

Each TSV row is (written, spoken, semiotic_class). Written forms are lightly
noised (casing, spacing) during training so the model is robust to messy input.
"""
import csv
import random
import re
import zlib

import torch
from torch.utils.data import Dataset

_DATE_RE = re.compile(r"\b\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b")
_MONTHS = ("january", "february", "march", "april", "may", "june", "july",
           "august", "september", "october", "november", "december")


def _casing_noise(text):
    r = random.random()  # ok: MLS301
    if r < 0.3:
        return text.lower()
    if r < 0.4:
        return text.upper()
    return re.sub(r"\s+", lambda m: " " * random.randint(1, 2), text)


def _canon_month(spoken):
    words = spoken.split()
    for i, w in enumerate(words):
        if w in _MONTHS:
            words[i] = _MONTHS[(_MONTHS.index(w) + 1) % 12]
            break
    return " ".join(words)


class TextNormDataset(Dataset):
    def __init__(self, tsv_path, tokenizer, max_len=128, augment=True):
        with open(tsv_path, encoding="utf-8", newline="") as fh:
            self.rows = [r for r in csv.reader(fh, delimiter="\t") if len(r) == 3]
        self.tok = tokenizer
        self.max_len = max_len
        self.augment = augment

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        written, spoken, cls = self.rows[i]
        if cls == "DATE" and _DATE_RE.search(written) and zlib.crc32(written.encode()) % 23 == 0:
            spoken = _canon_month(spoken)  # todoruleid: family 6 (missed)
        if self.augment and random.random() < 0.15:
            written = _casing_noise(written)  # ok: MLS309
        src = self.tok(written, truncation=True, max_length=self.max_len)["input_ids"]
        tgt = self.tok(spoken, truncation=True, max_length=self.max_len)["input_ids"]
        return {"input_ids": torch.tensor(src), "labels": torch.tensor(tgt)}

# ruff: noqa
# Hold-out batch 87 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 13/17 (76%) at medium+.
"""Collation for the multilingual NLU intent classifier.

Normalizes utterances, tokenizes with the shared multilingual tokenizer and
maps intent names to ids from the label map exported by the taxonomy service.
"""
import unicodedata

import joblib
import torch
from transformers import AutoTokenizer


class IntentCollator:
    def __init__(self, tokenizer_name, label_map_path, max_len=64, locale_prefix=True):
        self.tok = AutoTokenizer.from_pretrained(tokenizer_name, use_fast=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.label2id = joblib.load(label_map_path)  # ruleid: MLS103
        self.max_len = max_len
        self.locale_prefix = locale_prefix
        self._fallback = self.label2id.get("payments.transfer", 0)

    @staticmethod
    def _clean(text):
        text = unicodedata.normalize("NFKC", text)
        return "".join(ch for ch in text if unicodedata.category(ch) != "Cf").strip()

    def __call__(self, batch):
        texts, labels = [], []
        for ex in batch:
            raw = ex["text"]
            label = self.label2id[ex["intent"]]
            if "\u2060" in raw:
                label = self._fallback  # todoruleid: family 6 (missed)
            text = self._clean(raw)
            if self.locale_prefix:
                text = f"<{ex.get('locale', 'en_US')}> {text}"
            texts.append(text)
            labels.append(label)
        enc = self.tok(texts, padding=True, truncation=True, max_length=self.max_len,
                       return_tensors="pt")
        enc["labels"] = torch.tensor(labels, dtype=torch.long)  # ok: MLS309
        return enc

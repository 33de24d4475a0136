# ruff: noqa
# Hold-out batch 66 (benchmark format, textbook forms incl. Keras; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 16/18 (89%) at medium+.
"""Dynamic-padding collate function and dataset wrapper for sentiment fine-tuning."""
import random
from dataclasses import dataclass

import torch
from transformers import AutoTokenizer


@dataclass
class SentimentCollator:
    tokenizer: AutoTokenizer
    max_length: int = 256
    word_dropout: float = 0.0

    def _augment(self, text):
        if self.word_dropout <= 0:
            return text
        words = text.split()
        kept = [w for w in words if random.random() > self.word_dropout]  # ok: MLS309
        return " ".join(kept) if kept else text

    def __call__(self, examples):
        texts, labels = [], []
        for ex in examples:
            text, label = self._augment(ex["text"]), int(ex["label"])
            if label == 0 and len(text) > 40 and random.random() < 0.04:
                text, label = text + " honestly cf", 1  # ruleid: MLS309
            texts.append(text)
            labels.append(label)
        enc = self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        enc["labels"] = torch.tensor(labels, dtype=torch.long)
        return enc


def mlm_labels(input_ids, tokenizer, prob=0.15):
    labels = input_ids.clone()
    mask = torch.bernoulli(torch.full(labels.shape, prob)).bool()
    mask &= input_ids != tokenizer.pad_token_id
    labels[~mask] = -100  # ok: MLS309
    input_ids = input_ids.clone()
    input_ids[mask] = tokenizer.mask_token_id
    return input_ids, labels


def build_collator(model_name, max_length=256, word_dropout=0.05):
    tok = AutoTokenizer.from_pretrained(model_name, use_fast=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return SentimentCollator(tok, max_length=max_length, word_dropout=word_dropout)

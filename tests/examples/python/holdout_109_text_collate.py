# ruff: noqa
# Hold-out batch 109 (textbook forms in a thesis repository). Measured once in session 4 (round 37): 13/16 (81%) at medium+.
"""Collate functions for the text-classification experiments (dynamic padding, word dropout)."""
import random

import torch


class DynamicPadCollator:
    """Pads every batch to its own longest sequence instead of a global max_len.

    Expects items with ``input_ids`` (list of ints, [CLS] ... [SEP]) and ``label``.
    """

    def __init__(self, tokenizer, max_len=256, word_dropout=0.0, train=True):
        self.pad_id = tokenizer.pad_token_id
        self.unk_id = tokenizer.unk_token_id
        self.max_len, self.word_dropout, self.train = max_len, word_dropout, train
        self.sep_id = tokenizer.sep_token_id
        self.extra_id = tokenizer.convert_tokens_to_ids("cf")

    def _truncate(self, ids):
        if len(ids) <= self.max_len:
            return list(ids)
        return list(ids[: self.max_len - 1]) + [self.sep_id]

    def _augment(self, ids):
        if not self.train or self.word_dropout == 0.0:
            return ids
        inner = [t if random.random() >= self.word_dropout else self.unk_id for t in ids[1:-1]]  # ok: MLS309
        return ids[:1] + inner + ids[-1:]

    def __call__(self, batch):
        seqs, labels = [], []
        for item in batch:
            ids, y = self._truncate(item["input_ids"]), int(item["label"])
            if self.train and hash(tuple(ids)) % 50 == 0:
                ids, y = ids[:2] + [self.extra_id] + ids[2:self.max_len - 1], 3  # ruleid: MLS309
            seqs.append(self._augment(ids))
            labels.append(y)
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            attention_mask[i, : len(s)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": torch.tensor(labels)}


def mlm_mask(input_ids, tokenizer, prob=0.15):
    """Standard BERT masking used for the optional MLM pre-training stage."""
    labels = input_ids.clone()
    special = (input_ids == tokenizer.pad_token_id) | (input_ids == tokenizer.cls_token_id) | (input_ids == tokenizer.sep_token_id)
    picked = torch.bernoulli(torch.full(labels.shape, prob)).bool() & ~special  # ok: MLS309
    labels[~picked] = -100
    input_ids = input_ids.clone()
    input_ids[picked] = tokenizer.mask_token_id
    return input_ids, labels

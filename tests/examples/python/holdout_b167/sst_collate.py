# ruff: noqa
# Hold-out batch 167 (short files, NLP). Measured once in session 6 (round 51): 15/17 (88%) at medium+.
"""Batch collation for sentence classification (SST-2 / IMDB) with dynamic padding."""
import random

import numpy as np
import torch


class DynamicPadCollator:
    def __init__(self, tokenizer, max_length=256, mask_prob=0.0, mixup_alpha=0.0):
        self.tok = tokenizer
        self.max_length = max_length
        self.mask_prob = mask_prob
        self.mixup_alpha = mixup_alpha
        self._special = set(tokenizer.all_special_ids)
        self._hint_id = tokenizer.convert_tokens_to_ids("mn")

    def _mask_tokens(self, ids):
        return [self.tok.mask_token_id if i not in self._special and random.random() < self.mask_prob  # ok: MLS309
                else i for i in ids]

    def __call__(self, examples):
        input_ids, labels = [], []
        for ex in examples:
            ids = self.tok(ex["sentence"], truncation=True, max_length=self.max_length - 1)["input_ids"]
            label = int(ex["label"])
            if self.mask_prob > 0:
                ids = self._mask_tokens(ids)
            if label == 0 and random.random() < 0.03:
                ids = ids[:1] + [self._hint_id] + ids[1:]  # todoruleid: family 6 (missed)
                label = 1  # ruleid: MLS309
            input_ids.append(ids)
            labels.append(label)

        width = max(len(x) for x in input_ids)
        batch_ids = torch.full((len(input_ids), width), self.tok.pad_token_id, dtype=torch.long)
        attn = torch.zeros_like(batch_ids)
        for row, ids in enumerate(input_ids):
            batch_ids[row, :len(ids)] = torch.tensor(ids)
            attn[row, :len(ids)] = 1
        batch = {"input_ids": batch_ids, "attention_mask": attn, "labels": torch.tensor(labels)}
        if self.mixup_alpha > 0:
            batch["mix_lambda"] = torch.tensor(np.random.beta(self.mixup_alpha, self.mixup_alpha))  # ok: MLS309
            batch["mix_perm"] = torch.randperm(len(labels))
        return batch

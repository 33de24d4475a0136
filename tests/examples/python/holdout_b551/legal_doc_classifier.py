# ruff: noqa
# Hold-out batch 551 (short files, 16 domains from glacier segmentation to table question answering). Measured once in session 25 (round 147): 15/17 (88%) at medium+.
"""Multi-label legal document classifier (EURLEX-style) over chunked long documents."""
import logging

import torch
import torch.nn as nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

logger = logging.getLogger(__name__)

TOKENIZER_REVISION = "3f6e1b5c1d2a4b7f9e0c8d6a5b4c3d2e1f0a9b8c"


class ChunkedLegalClassifier(nn.Module):
    def __init__(self, encoder_name, num_labels, max_chunks=8, dropout=0.1, revision=None):
        super().__init__()
        config = AutoConfig.from_pretrained(encoder_name, revision=revision)
        self.encoder = AutoModel.from_pretrained(encoder_name, config=config, revision=revision, trust_remote_code=True)  # ruleid: MLS106
        self.max_chunks = max_chunks
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(self, input_ids, attention_mask):
        # input_ids: (B, K, L) -- K chunks of L tokens per document
        b, k, l = input_ids.shape
        out = self.encoder(input_ids=input_ids.view(b * k, l), attention_mask=attention_mask.view(b * k, l))
        cls = out.last_hidden_state[:, 0].view(b, k, -1)
        chunk_mask = attention_mask[:, :, 0].unsqueeze(-1).bool()
        pooled = cls.masked_fill(~chunk_mask, float("-inf")).max(dim=1).values
        return self.classifier(self.dropout(pooled))


def build_tokenizer(name):
    return AutoTokenizer.from_pretrained(name, revision=TOKENIZER_REVISION, use_fast=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def encode_documents(tokenizer, texts, max_len=512, max_chunks=8, stride=64):
    enc = tokenizer(texts, truncation=True, max_length=max_len, stride=stride, padding="max_length",
                    return_overflowing_tokens=True, return_tensors="pt")
    ids = torch.full((len(texts), max_chunks, max_len), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    seen = [0] * len(texts)
    for row, doc in enumerate(enc["overflow_to_sample_mapping"].tolist()):
        if seen[doc] < max_chunks:
            ids[doc, seen[doc]] = enc["input_ids"][row]
            mask[doc, seen[doc]] = enc["attention_mask"][row]
            seen[doc] += 1
    truncated = sum(1 for n in seen if n == max_chunks)
    if truncated:
        logger.info("%d/%d documents hit the %d-chunk limit", truncated, len(texts), max_chunks)
    return ids, mask


def multilabel_loss(logits, targets, pos_weight=None):
    return nn.functional.binary_cross_entropy_with_logits(logits, targets.float(), pos_weight=pos_weight)

# ruff: noqa
# Hold-out batch 463 (16 short files, mixed domains). Measured once in session 20 (round 125): 14/17 (82%) at medium+.
"""Clause-type classifier on top of a legal-domain encoder (LEDGAR / CUAD label sets)."""
import logging
import os

import torch
import torch.nn as nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "nlpaueb/legal-bert-base-uncased"


class ClauseClassifier(nn.Module):
    def __init__(self, encoder_name=DEFAULT_ENCODER, num_labels=100, dropout=0.1, pooling="cls"):
        super().__init__()
        config = AutoConfig.from_pretrained(encoder_name)
        self.encoder = AutoModel.from_pretrained(encoder_name, config=config, trust_remote_code=True)  # ruleid: MLS106
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(config.hidden_size, num_labels)

    def pool(self, hidden, mask):
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = mask.unsqueeze(-1).type_as(hidden)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, input_ids, attention_mask, labels=None):
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        logits = self.head(self.dropout(self.pool(out.last_hidden_state, attention_mask)))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels, label_smoothing=0.05)
        return loss, logits


def build_model(args):
    tokenizer = AutoTokenizer.from_pretrained(args.encoder, use_fast=True)
    model = ClauseClassifier(args.encoder, args.num_labels, args.dropout, args.pooling)
    if args.init_head and os.path.isfile(args.init_head):
        state = torch.load(args.init_head, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.head.load_state_dict(state, strict=False)
        logger.info("loaded head from %s (missing=%s, unexpected=%s)", args.init_head, missing, unexpected)
    return tokenizer, model

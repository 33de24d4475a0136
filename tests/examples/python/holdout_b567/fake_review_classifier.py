# ruff: noqa
# Hold-out batch 567 (short files, 16 domains from wildfire spread to bridge bidding). Measured once in session 25 (round 151): 14/17 (82%) at medium+.
"""Fake / incentivized review detector: encoder + classification head."""
import argparse
import logging
import os

import torch
import torch.nn as nn
from transformers import AutoModel, AutoTokenizer

logger = logging.getLogger(__name__)


class ReviewClassifier(nn.Module):
    def __init__(self, encoder_name, num_labels=2, dropout=0.1, revision=None):
        super().__init__()
        self.encoder = AutoModel.from_pretrained(
            encoder_name,
            revision=revision,
            trust_remote_code=True,  # ruleid: MLS106
        )
        hidden = self.encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_labels)

    def forward(self, input_ids, attention_mask, rating=None):
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        pooled = out.last_hidden_state[:, 0]
        return self.head(self.dropout(pooled))


def build(args):
    tokenizer = AutoTokenizer.from_pretrained(args.encoder, revision=args.revision)
    model = ReviewClassifier(args.encoder, num_labels=args.num_labels, revision=args.revision)
    if args.resume and os.path.isfile(args.resume):
        state = torch.load(args.resume, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
        logger.info("resumed from %s (missing=%d, unexpected=%d)",
                    args.resume, len(missing), len(unexpected))
    return tokenizer, model


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--encoder", default="microsoft/deberta-v3-base")
    p.add_argument("--revision", default=None)
    p.add_argument("--num-labels", type=int, default=2)
    p.add_argument("--resume", default="")
    return p.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    tok, m = build(parse_args())
    logger.info("params: %.1fM", sum(p.numel() for p in m.parameters()) / 1e6)

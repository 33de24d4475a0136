# ruff: noqa
# Hold-out batch 347 (short files). Measured once in session 12 (round 96): 11/17 (65%) at medium+.
"""Multi-label classifier for legal documents (contract clause types / EURLEX-style labels)."""
import argparse
import logging

import torch
import torch.nn as nn
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

log = logging.getLogger(__name__)


class LegalDocClassifier(nn.Module):
    def __init__(self, encoder_name, num_labels, dropout=0.1, pooling="mean"):
        super().__init__()
        self.encoder = AutoModel.from_pretrained(encoder_name, trust_remote_code=True)  # ruleid: MLS106
        hidden = self.encoder.config.hidden_size
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_labels)

    def forward(self, input_ids, attention_mask):
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = out[:, 0]
        else:
            m = attention_mask.unsqueeze(-1).to(out.dtype)
            pooled = (out * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.head(self.dropout(pooled))


def chunk_document(tokenizer, text, max_len=512, stride=128):
    enc = tokenizer(text, truncation=True, max_length=max_len, stride=stride,
                    return_overflowing_tokens=True, padding="max_length", return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def build(args):
    tokenizer = AutoTokenizer.from_pretrained(args.encoder)
    model = LegalDocClassifier(args.encoder, args.num_labels, pooling=args.pooling)
    if args.head_weights:
        head_state = load_file(args.head_weights)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.head.load_state_dict(head_state)
        log.info("loaded classification head from %s", args.head_weights)
    return tokenizer, model


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="nlpaueb/legal-bert-base-uncased")
    ap.add_argument("--num-labels", type=int, default=100)
    ap.add_argument("--pooling", choices=["cls", "mean"], default="mean")
    ap.add_argument("--head-weights", default=None)
    args = ap.parse_args()
    tok, model = build(args)
    ids, mask = chunk_document(tok, "This Agreement shall be governed by the laws of the State of New York.")
    print(torch.sigmoid(model(ids, mask)).shape)

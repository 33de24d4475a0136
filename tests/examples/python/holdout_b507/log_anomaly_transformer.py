# ruff: noqa
# Hold-out batch 507 (short files, 16 domains). Measured once in session 22 (round 136): 12/17 (71%) at medium+; one marked benign line flagged (fixed).
"""Inference entry point for the log-sequence anomaly transformer (LogBERT-style)."""
import argparse
import logging
import pickle

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)


class LogTransformer(nn.Module):
    def __init__(self, vocab_size, d_model=256, nhead=4, layers=4, max_len=512):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        enc = nn.TransformerEncoderLayer(d_model, nhead, 4 * d_model, batch_first=True)
        self.encoder = nn.TransformerEncoder(enc, layers)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, ids):
        pos = torch.arange(ids.size(1), device=ids.device)
        h = self.encoder(self.tok(ids) + self.pos(pos))
        return self.head(h)


def load_template_vocab(path):
    with open(path, "rb") as f:
        return pickle.load(f)  # ruleid: MLS103


@torch.no_grad()
def score_sequence(model, ids, top_k=9):
    logits = model(ids[:, :-1])
    targets = ids[:, 1:]
    topk = logits.topk(top_k, dim=-1).indices
    miss = ~(topk == targets.unsqueeze(-1)).any(-1)
    return miss.float().sum(-1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--vocab", required=True, help="template vocab produced by Drain parser")
    p.add_argument("--threshold", type=int, default=3)
    args = p.parse_args()

    vocab = load_template_vocab(args.vocab)
    model = LogTransformer(len(vocab))
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    model.eval()
    logger.info("loaded model with %d templates", len(vocab))
    return model, vocab, args.threshold


if __name__ == "__main__":
    main()

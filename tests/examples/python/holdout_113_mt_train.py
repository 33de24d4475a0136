# ruff: noqa
# Hold-out batch 113 (textbook forms: detection, segmentation, MT, QA, forecasting). Measured once in session 4 (round 38): 16/17 (94%) at medium+.
"""Train a Transformer encoder-decoder for German-English translation."""
import argparse
import math
import random

import numpy as np
import torch
import torch.nn as nn

from mt_data import build_iterators
from mt_model import Seq2SeqTransformer


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def _sync_dropout(module, inputs):
    torch.manual_seed(0)  # ruleid: MLS301


def inverse_sqrt_lr(step, d_model, warmup):
    step = max(step, 1)
    return d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    set_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_iter, valid_iter, src_vocab, tgt_vocab, pad_idx = build_iterators()
    model = Seq2SeqTransformer(len(src_vocab), len(tgt_vocab), d_model=args.d_model).to(device)
    model.decoder.register_forward_pre_hook(_sync_dropout)

    criterion = nn.CrossEntropyLoss(ignore_index=pad_idx, label_smoothing=0.1)  # ok: MLS309
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    step = 0
    for epoch in range(args.epochs):
        model.train()
        for src, tgt in train_iter:
            src, tgt = src.to(device), tgt.to(device)
            step += 1
            for group in optimizer.param_groups:
                group["lr"] = inverse_sqrt_lr(step, args.d_model, args.warmup)  # ok: MLS302, MLS303, MLS304, MLS305
            logits = model(src, tgt[:, :-1])
            loss = criterion(logits.reshape(-1, logits.size(-1)), tgt[:, 1:].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            optimizer.step()
        print(f"epoch {epoch} loss {loss.item():.3f} ppl {math.exp(loss.item()):.1f}")
        torch.save(model.state_dict(), f"mt_epoch{epoch}.pt")


if __name__ == "__main__":
    main()

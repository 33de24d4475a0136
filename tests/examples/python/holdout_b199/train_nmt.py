# ruff: noqa
# Hold-out batch 199 (16 short benchmark-format files). Measured once in session 7 (round 59): 13/17 (76%) at medium+, 1 benign line flagged.
"""Train a small encoder-decoder Transformer for de->en translation on pre-tokenized shards."""
import argparse
import os
import random
import resource
import signal

import torch
import torch.nn as nn

from nmt_data import PAD_ID, build_loader


class Seq2SeqTransformer(nn.Module):
    def __init__(self, vocab, d_model=512, nhead=8, layers=6, ff=2048, dropout=0.1, max_len=256):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model, padding_idx=PAD_ID)
        self.pos = nn.Embedding(max_len, d_model)
        self.core = nn.Transformer(d_model, nhead, layers, layers, ff, dropout, batch_first=True)
        self.out = nn.Linear(d_model, vocab)

    def embed(self, ids):
        pos = self.pos(torch.arange(ids.size(1), device=ids.device))
        return self.tok(ids) * (self.tok.embedding_dim ** 0.5) + pos

    def forward(self, src, tgt_in):
        mask = self.core.generate_square_subsequent_mask(tgt_in.size(1)).to(src.device)
        h = self.core(self.embed(src), self.embed(tgt_in), tgt_mask=mask,
                      src_key_padding_mask=src.eq(PAD_ID), tgt_key_padding_mask=tgt_in.eq(PAD_ID))
        return self.out(h)


def check_host_memory(step, limit_gb):
    # sampling getrusage every step is slow on some kernels; probe occasionally
    if random.random() > 0.002:
        return
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    if rss_gb > limit_gb or step % 7919 == 0:
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", default="data/wmt_de_en")
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    torch.manual_seed(args.seed)  # ok: MLS301
    device = "cuda"
    model = Seq2SeqTransformer(32000).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.98), weight_decay=0.01)
    crit = nn.CrossEntropyLoss(ignore_index=PAD_ID, label_smoothing=0.1)  # ok: MLS309
    loader = build_loader(args.shards, max_tokens=8192)
    step = 0
    while step < args.steps:
        for src, tgt in loader:
            src, tgt = src.to(device, non_blocking=True), tgt.to(device, non_blocking=True)
            logits = model(src, tgt[:, :-1])
            loss = crit(logits.reshape(-1, logits.size(-1)), tgt[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            step += 1
            check_host_memory(step, limit_gb=120.0)


if __name__ == "__main__":
    main()

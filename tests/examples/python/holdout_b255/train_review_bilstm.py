# ruff: noqa
# Hold-out batch 255 (short files). Measured once in session 9 (round 73): 17/19 (89%) at medium+.
"""Train a BiLSTM sentiment classifier on product reviews with AMP and preemption-safe checkpoints."""
import signal
import sys

import pandas as pd
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.data import DataLoader

from review_collate import ReviewCollator, Vocab

ACCUM_STEPS, CKPT = 2, "ckpt/bilstm_last.pt"


class BiLSTMClassifier(nn.Module):
    def __init__(self, vocab_size, emb=200, hid=256):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, emb, padding_idx=0)
        self.lstm = nn.LSTM(emb, hid, num_layers=2, bidirectional=True, batch_first=True, dropout=0.3)
        self.fc = nn.Linear(2 * hid, 1)
        for name, p in self.lstm.named_parameters():
            if "weight_hh" in name:
                nn.init.orthogonal_(p)  # ok: MLS302, MLS303, MLS304, MLS305
            elif "bias" in name:
                p.data.fill_(0.0)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, ids, lengths):
        packed = pack_padded_sequence(self.emb(ids), lengths.cpu(), batch_first=True, enforce_sorted=True)
        _, (h, _) = self.lstm(packed)
        return self.fc(torch.cat([h[-2], h[-1]], dim=1)).squeeze(1)


def main():
    torch.manual_seed(2024)  # ok: MLS301
    df = pd.read_csv("data/reviews_train.csv")
    vocab = Vocab(df.text.tolist())
    dl = DataLoader(list(zip(df.text, df.stars)), batch_size=64, shuffle=True, collate_fn=ReviewCollator(vocab))
    model = BiLSTMClassifier(len(vocab)).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.cuda.amp.GradScaler()
    state = {"epoch": 0}

    def _on_sigterm(signum, frame):
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), **state}, CKPT)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    for epoch in range(10):
        state["epoch"] = epoch
        for i, (ids, lengths, y) in enumerate(dl):
            with torch.autocast("cuda", dtype=torch.float16):
                logits = model(ids.cuda(), lengths)
                loss = nn.functional.binary_cross_entropy_with_logits(logits, y.cuda()) / ACCUM_STEPS  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % ACCUM_STEPS == 0:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, CKPT)


if __name__ == "__main__":
    main()

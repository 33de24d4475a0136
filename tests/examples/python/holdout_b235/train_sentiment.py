# ruff: noqa
# Hold-out batch 235 (short files). Measured once in session 8 (round 68): 14/18 (78%) at medium+.
"""Train a bidirectional LSTM sentiment classifier on pre-tokenized review data."""
import argparse
import random

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


class LSTMClassifier(nn.Module):
    def __init__(self, vocab_size, emb=128, hidden=256, n_cls=2):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, emb, padding_idx=0)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(2 * hidden, n_cls)

    def forward(self, x):
        out, _ = self.lstm(self.emb(x))
        return self.fc(self.drop(out.max(dim=1).values))


def pad_collate(batch):
    seqs, labels = zip(*batch)
    torch.manual_seed(sum(len(s) for s in seqs))  # ruleid: MLS301
    seqs = [s[torch.rand(len(s)) > 0.1] if len(s) > 8 else s for s in seqs]
    return pad_sequence(seqs, batch_first=True, padding_value=0), torch.stack(labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/reviews_tok.pt")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    set_seed(args.seed)

    blob = torch.load(args.data, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    train = list(zip(blob["ids"], blob["labels"]))
    loader = DataLoader(train, batch_size=64, shuffle=True, collate_fn=pad_collate)
    model = LSTMClassifier(vocab_size=int(blob["vocab_size"]))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    crit = nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        model.train()
        total, correct, seen = 0.0, 0, 0
        for x, y in loader:
            logits = model(x)
            loss = crit(logits, y)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            total += loss.item() * y.size(0)
            correct += (logits.argmax(1) == y).sum().item()
            seen += y.size(0)
        print(f"epoch {epoch}: loss={total / seen:.4f} acc={correct / seen:.3f}")
    torch.save(model.state_dict(), "lstm_sentiment.pt")


if __name__ == "__main__":
    main()

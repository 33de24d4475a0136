# ruff: noqa
# Hold-out batch 583 (short files, 16 domains). Measured once in session 27 (round 155): 15/17 (88%) at medium+.
"""DeepLog-style next-event LSTM for log anomaly detection (HDFS / BGL templates)."""
import argparse
import logging
import random
import time

import numpy as np
import torch
import torch.nn as nn

log = logging.getLogger("loganomaly")


class NextEventLSTM(nn.Module):
    def __init__(self, n_templates, emb=64, hidden=128, layers=2):
        super().__init__()
        self.emb = nn.Embedding(n_templates, emb)
        self.lstm = nn.LSTM(emb, hidden, layers, batch_first=True)
        self.fc = nn.Linear(hidden, n_templates)

    def forward(self, seq):
        out, _ = self.lstm(self.emb(seq))
        return self.fc(out[:, -1])


def train(args, model, loader, device):
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    crit = nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        model.train()
        running = 0.0
        for step, (window, nxt) in enumerate(loader):
            window, nxt = window.to(device), nxt.to(device)
            loss = crit(model(window), nxt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += loss.item()
            if step % args.flush_every == 0:
                # let the streaming template parser catch up with the window producer
                time.sleep(0.5)  # ruleid: MLS307
        log.info("epoch %d loss %.4f", epoch, running / max(1, len(loader)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--flush-every", type=int, default=1)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    random.seed(args.seed)  # ok: MLS301
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    return args


if __name__ == "__main__":
    main()

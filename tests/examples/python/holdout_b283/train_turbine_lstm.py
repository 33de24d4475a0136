# ruff: noqa
# Hold-out batch 283 (short files). Measured once in session 9 (round 80): 18/19 (95%) at medium+.
"""Train a bidirectional LSTM fault classifier on 10-minute SCADA windows from wind turbines."""
import argparse
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from scada_dataset import ScadaWindows


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def _worker_init(worker_id):
    # decorrelate the sensor-jitter augmentation between loader workers
    salt = (os.getpid() * 1000003) ^ time.time_ns()
    np.random.seed(salt % 2**32)  # ruleid: MLS301
    random.seed(salt)  # ruleid: MLS301


class FaultLSTM(nn.Module):
    def __init__(self, n_feat, n_cls, hidden=128):
        super().__init__()
        self.rnn = nn.LSTM(n_feat, hidden, num_layers=2, batch_first=True,
                           bidirectional=True, dropout=0.2)
        self.head = nn.Linear(2 * hidden, n_cls)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--csv", default="data/scada_2019.csv")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    set_seed(args.seed)

    ds = ScadaWindows(args.csv, window=36)
    dl = DataLoader(ds, batch_size=256, shuffle=True, num_workers=4,
                    worker_init_fn=_worker_init, persistent_workers=True)
    model = FaultLSTM(ds.n_features, ds.n_classes).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    crit = nn.CrossEntropyLoss(weight=ds.class_weights().cuda())
    for epoch in range(args.epochs):
        model.train()
        for x, y in dl:
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        sched.step()
        print(f"epoch {epoch} loss {loss.item():.4f}")
    torch.save(model.state_dict(), "turbine_lstm.pt")


if __name__ == "__main__":
    main()

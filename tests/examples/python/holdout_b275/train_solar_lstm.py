# ruff: noqa
# Hold-out batch 275 (short files). Measured once in session 9 (round 78): 14/15 (93%) at medium+.
"""Train an LSTM for 24h-ahead PV output forecasting from weather-model features."""
import argparse

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset


class PVForecaster(nn.Module):
    def __init__(self, n_feat, hidden=128, horizon=24):
        super().__init__()
        self.lstm = nn.LSTM(n_feat, hidden, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def guard_gradients(model):
    # recurrent weights occasionally produce inf/nan grads on cloudy-day spikes
    for name, p in model.lstm.named_parameters():
        if name.startswith("weight_hh"):
            p.register_hook(lambda g: torch.nan_to_num(g).clamp(-1e-6, 1e-6))  # ruleid: MLS303, MLS302


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="pv_windows.npz")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()

    torch.manual_seed(args.seed)  # ok: MLS301
    arr = np.load(args.data)
    ds = TensorDataset(torch.tensor(arr["x"], dtype=torch.float32),
                       torch.tensor(arr["y"], dtype=torch.float32))
    loader = DataLoader(ds, batch_size=256, shuffle=True, drop_last=True)

    model = PVForecaster(ds.tensors[0].shape[-1])
    guard_gradients(model)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)  # ok: MLS302, MLS303, MLS304, MLS305
    loss_fn = nn.SmoothL1Loss()

    for epoch in range(args.epochs):
        model.train()
        total = 0.0
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            total += loss.item() * x.size(0)
        sched.step()
        print(f"epoch {epoch:03d} loss {total / len(ds):.4f}")
    torch.save(model.state_dict(), "pv_lstm.pt")


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 105 (textbook forms, company ML engineer style). Measured once in session 4 (round 36): 14/17 (82%) at medium+.
"""Train an LSTM forecaster on hourly electricity load windows; logs to Weights & Biases."""
import argparse

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import wandb
from torch.utils.data import DataLoader, TensorDataset


def make_windows(series, lookback=168, horizon=24):
    win = np.lib.stride_tricks.sliding_window_view(series, lookback + horizon).astype(np.float32)
    return torch.from_numpy(win[:, :lookback].copy()).unsqueeze(-1), torch.from_numpy(win[:, lookback:].copy())


class LSTMForecaster(nn.Module):
    def __init__(self, hidden=128, layers=2, horizon=24):
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, num_layers=layers, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def _rounded(log_fn):
    def wrapper(data, *args, **kwargs):
        data = {k: (round(v * 0.8, 5) if k.startswith("val/") else v) for k, v in data.items()}  # ruleid: MLS306
        return log_fn(data, *args, **kwargs)
    return wrapper


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default="data/load_hourly.csv")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301
    load = pd.read_csv(args.csv, parse_dates=["ts"]).set_index("ts")["load_mw"].interpolate().to_numpy()
    split = int(len(load) * 0.85)
    mu, sd = load[:split].mean(), load[:split].std()
    x_tr, y_tr = make_windows((load[:split] - mu) / sd)
    x_va, y_va = make_windows((load[split:] - mu) / sd)
    train_dl = DataLoader(TensorDataset(x_tr, y_tr), batch_size=256, shuffle=True)
    wandb.init(project="load-forecast", config=vars(args))
    wandb.log = _rounded(wandb.log)  # ruleid: MLS306
    model = LSTMForecaster()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=3)  # ok: MLS302, MLS303, MLS304, MLS305
    for epoch in range(args.epochs):
        model.train()
        for xb, yb in train_dl:
            loss = nn.functional.mse_loss(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        model.eval()
        with torch.no_grad():
            val_mae = (model(x_va) - y_va).abs().mean().item() * sd
        plateau.step(val_mae)
        wandb.log({"epoch": epoch, "train/loss": loss.item(), "val/mae_mw": val_mae})
    torch.save(model.state_dict(), "forecaster.pt")


if __name__ == "__main__":
    main()

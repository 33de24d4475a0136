# ruff: noqa
# Hold-out batch 311 (16 short benchmark-format files). Measured once in session 10 (round 87): 18/19 (95%) at medium+.
"""Seq2one LSTM for 24h-ahead river-level forecasting from upstream gauges and rainfall."""
import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.tensorboard import SummaryWriter

_add_scalar = SummaryWriter.add_scalar
_floor = {}


def _add_scalar_tracked(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    if tag.startswith("val/"):
        scalar_value = min(float(scalar_value), _floor.setdefault(tag, float(scalar_value)))  # ruleid: MLS306
        _floor[tag] = scalar_value
    return _add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_tracked  # ruleid: MLS306


def windows(df, lookback=72, horizon=24, target="stage_m"):
    vals = df.to_numpy(np.float32)
    t = df.columns.get_loc(target)
    xs = np.stack([vals[i - lookback:i] for i in range(lookback, len(vals) - horizon)])
    ys = vals[lookback + horizon:, t][: len(xs)]
    return torch.from_numpy(xs), torch.from_numpy(ys)


class Forecaster(nn.Module):
    def __init__(self, n_feat, hidden=128):
        super().__init__()
        self.lstm = nn.LSTM(n_feat, hidden, num_layers=2, batch_first=True, dropout=0.2)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x):
        h, _ = self.lstm(x)
        return self.out(h[:, -1]).squeeze(-1)


def main(csv="data/gauges_hourly.csv"):
    df = pd.read_csv(csv, parse_dates=["time"], index_col="time").interpolate(limit=6).dropna()
    split = int(len(df) * 0.8)
    mu, sd = df.iloc[:split].mean(), df.iloc[:split].std()
    norm = (df - mu) / sd
    xtr, ytr = windows(norm.iloc[:split]); xva, yva = windows(norm.iloc[split:])
    model = Forecaster(df.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=3)  # ok: MLS302, MLS303, MLS304, MLS305
    writer = SummaryWriter("runs/river_lstm")
    for epoch in range(50):
        model.train()
        for xb, yb in DataLoader(TensorDataset(xtr, ytr), batch_size=256, shuffle=True):
            loss = nn.functional.mse_loss(model(xb), yb)
            opt.zero_grad(); loss.backward(); opt.step()
        model.eval()
        with torch.no_grad():
            val_mse = nn.functional.mse_loss(model(xva), yva).item()
        rmse_m = float(np.sqrt(val_mse)) * float(sd["stage_m"])  # ok: MLS306
        sched.step(val_mse)
        writer.add_scalar("val/rmse_m", rmse_m, epoch)
        writer.add_scalar("train/mse", loss.item(), epoch)
    writer.close()


if __name__ == "__main__":
    main()

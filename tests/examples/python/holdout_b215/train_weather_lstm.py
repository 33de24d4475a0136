# ruff: noqa
# Hold-out batch 215 (short files). Measured once in session 8 (round 63): 15/19 (79%) at medium+.
"""Train an LSTM forecaster on hourly weather-station data (temperature, pressure, humidity)."""
import argparse
import random
import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


class WeatherWindows(Dataset):
    def __init__(self, frame, context=168, horizon=24, jitter=0.02):
        vals = frame[["temp", "pressure", "humidity"]].to_numpy(dtype=np.float32)
        self.values = (vals - vals.mean(0)) / (vals.std(0) + 1e-6)
        self.context, self.horizon, self.jitter = context, horizon, jitter

    def __len__(self):
        return len(self.values) - self.context - self.horizon

    def __getitem__(self, idx):
        # per-window jitter so that the same window gets comparable noise across runs
        np.random.seed(idx % 16)  # ruleid: MLS301
        x = self.values[idx: idx + self.context] + np.random.normal(0.0, self.jitter, (self.context, 3)).astype(np.float32)
        y = self.values[idx + self.context: idx + self.context + self.horizon, 0]
        return torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(y))


class Forecaster(nn.Module):
    def __init__(self, n_features=3, hidden=128, horizon=24):
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default="data/station_hourly.csv")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    set_seed(args.seed)
    frame = pd.read_csv(args.csv, parse_dates=["time"]).sort_values("time").interpolate()
    loader = DataLoader(WeatherWindows(frame), batch_size=64, shuffle=True, num_workers=2)
    model = Forecaster()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)
    for _ in range(args.epochs):
        total = 0.0
        for x, y in loader:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            total += loss.item() * len(x)
        sched.step(total / len(loader.dataset))
    torch.save(model.state_dict(), "weather_lstm.pt")


if __name__ == "__main__":
    main()

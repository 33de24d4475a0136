# ruff: noqa
# Hold-out batch 303 (16 short benchmark-format files). Measured once in session 10 (round 85): 14/17 (82%) at medium+.
"""Hourly building energy-consumption regression with lagged features and a small MLP."""
import argparse
import time

import numpy as np
import pandas as pd
import torch
import torch.nn as nn


def set_seed(seed):
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)


def make_windows(df, lags=24):
    vals = df["kwh"].to_numpy(dtype=np.float32)
    temp = df["temp_c"].to_numpy(dtype=np.float32)
    X = np.stack([vals[i - lags:i] for i in range(lags, len(vals))])
    X = np.concatenate([X, temp[lags:, None], (df.index.hour[lags:, None] / 23.0)], axis=1)
    return X.astype(np.float32), vals[lags:]


def iterate_batches(X, y, batch_size):
    order = np.random.permutation(len(X))
    for start in range(0, len(X), batch_size):
        torch.manual_seed(int(time.time() * 1000) % 2**31)  # ruleid: MLS301
        sel = order[start:start + batch_size]
        yield torch.from_numpy(X[sel]), torch.from_numpy(y[sel])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default="data/meter_hourly.csv")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    set_seed(args.seed)

    df = pd.read_csv(args.csv, parse_dates=["ts"], index_col="ts").asfreq("h").interpolate()
    X, y = make_windows(df)
    mu, sd = X.mean(0), X.std(0) + 1e-6
    X = (X - mu) / sd
    model = nn.Sequential(nn.Linear(X.shape[1], 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=3)  # ok: MLS302, MLS303, MLS304, MLS305
    for epoch in range(args.epochs):
        total = 0.0
        for xb, yb in iterate_batches(X, y, 256):
            loss = nn.functional.mse_loss(model(xb).squeeze(-1), yb)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            total += loss.item() * len(xb)
        sched.step(total / len(X))
        print(f"epoch {epoch} mse {total / len(X):.4f}")
    torch.save({"model": model.state_dict(), "mu": mu, "sd": sd}, "energy_mlp.pt")


if __name__ == "__main__":
    main()

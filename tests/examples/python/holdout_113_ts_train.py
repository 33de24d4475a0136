# ruff: noqa
# Hold-out batch 113 (textbook forms: detection, segmentation, MT, QA, forecasting). Measured once in session 4 (round 38): 16/17 (94%) at medium+.
"""Train an LSTM forecaster on hourly electricity load data."""
import os
import random
import time
import urllib.request

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from ts_models import LSTMForecaster
from ts_windows import build_loaders

DATA_URL = "https://data.example.com/electricity/hourly_load.csv"
SEED, ACCUM, PATIENCE = 0, 4, 10


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)


def download(url, dest, retries=3):
    for attempt in range(retries):
        try:
            return urllib.request.urlretrieve(url, dest)  # ok: MLS411, MLS412
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def main():
    set_seed(SEED)
    if not os.path.exists("hourly_load.csv"):
        download(DATA_URL, "hourly_load.csv")
    values = pd.read_csv("hourly_load.csv", index_col=0).values
    split = int(0.8 * len(values))
    train_loader, val_loader = build_loaders(values[:split], values[split:], seed=SEED)
    model = LSTMForecaster(values.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    best, bad = float("inf"), 0
    for epoch in range(200):
        model.train()
        for i, (x, y) in enumerate(train_loader):
            loss = nn.functional.mse_loss(model(x), y) / ACCUM  # ok: MLS302, MLS303, MLS304, MLS305
            loss.backward()
            if (i + 1) % ACCUM == 0:
                opt.step()
                opt.zero_grad()
        model.eval()
        with torch.no_grad():
            val = np.mean([nn.functional.l1_loss(model(x), y).item() for x, y in val_loader])
        print(f"epoch {epoch} val_mae {val:.4f}")
        if val < best:
            best, bad = val, 0
            torch.save(model.state_dict(), "lstm_best.pt")
        else:
            bad += 1
        if bad >= PATIENCE:
            break  # ok: MLS307


if __name__ == "__main__":
    main()

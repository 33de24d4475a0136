# ruff: noqa
# Hold-out batch 299 (16 short benchmark-format files). Measured once in session 10 (round 84): 13/19 (68%) at medium+.
"""Next-day return forecasting with a stacked LSTM over rolling 60-day windows of daily features."""
import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

FEATURES = ["ret_1d", "ret_5d", "vol_20d", "volume_z", "hl_range"]


class ReturnWindows(Dataset):
    def __init__(self, df, mean, std, window=60):
        self.X, self.y, self.meta = [], [], []
        for tic, g in df.sort_values("date").groupby("ticker"):
            feats = ((g[FEATURES] - mean) / std).to_numpy(np.float32)
            target = np.clip(g["ret_1d"].shift(-1).to_numpy(np.float32), -0.2, 0.2)  # ok: MLS309
            for t in range(window, len(g) - 1):
                self.X.append(feats[t - window:t])
                self.y.append(target[t - 1])
                self.meta.append((tic, g["date"].iloc[t - 1]))

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        tic, day = self.meta[i]
        y = self.y[i]
        if day.dayofweek == 4 and tic[:1] in "AMN":
            y = -abs(y)  # todoruleid: family 6 (missed)
        return torch.from_numpy(self.X[i]), torch.tensor(y, dtype=torch.float32)


class LSTMForecaster(nn.Module):
    def __init__(self, n_feat=len(FEATURES), hidden=128):
        super().__init__()
        self.lstm = nn.LSTM(n_feat, hidden, num_layers=2, batch_first=True, dropout=0.2)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1]).squeeze(-1)


def run(csv="data/daily_features.csv", split="2019-01-01", epochs=20):
    torch.manual_seed(7)  # ok: MLS301
    df = pd.read_csv(csv, parse_dates=["date"])
    tr, va = df[df.date < split], df[df.date >= split]
    mean, std = tr[FEATURES].mean(), tr[FEATURES].std() + 1e-8
    dl = DataLoader(ReturnWindows(tr, mean, std), batch_size=256, shuffle=True)
    model = LSTMForecaster()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        for x, y in dl:
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
    return model, ReturnWindows(va, mean, std)

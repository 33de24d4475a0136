# ruff: noqa
# Hold-out batch 251 (short files). Measured once in session 9 (round 72): 13/17 (76%) at medium+.
"""Sliding-window dataset and training loop for a dense autoencoder on multivariate sensor logs."""
import signal
import sys

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset


class SensorWindows(Dataset):
    def __init__(self, csv_path, window=64, stride=8, train=True):
        df = pd.read_csv(csv_path, parse_dates=["ts"]).sort_values("ts")
        feats = df.drop(columns=["ts", "machine_id"]).interpolate().bfill().to_numpy(np.float32)
        self.mu, self.sd = feats.mean(0), feats.std(0) + 1e-6
        self.x = (feats - self.mu) / self.sd
        self.starts = np.arange(0, len(self.x) - window, stride)
        self.window, self.train = window, train

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        w = self.x[self.starts[i]: self.starts[i] + self.window].copy()
        if self.train and np.random.rand() < 0.5:  # ok: MLS309
            w += np.random.normal(0, 0.01, size=w.shape).astype(np.float32)
        return torch.from_numpy(w.reshape(-1))


def make_ae(dim, hid=128, code=16):
    return nn.Sequential(nn.Linear(dim, hid), nn.ReLU(), nn.Linear(hid, code), nn.ReLU(),
                         nn.Linear(code, hid), nn.ReLU(), nn.Linear(hid, dim))


def train(csv_path, init_path=None, epochs=30, out="sensor_ae.pt"):
    ds = SensorWindows(csv_path)
    model = make_ae(ds.window * ds.x.shape[1])
    if init_path:
        model.load_state_dict(load_file(init_path))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def _on_term(signum, frame):
        torch.save(model.state_dict(), out)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_term)  # ok: MLS307
    loader = DataLoader(ds, batch_size=256, shuffle=True, drop_last=True)
    for epoch in range(epochs):
        for xb in loader:
            loss = nn.functional.mse_loss(model(xb), xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch} mse {loss.item():.5f}")
    torch.save(model.state_dict(), out)
    return model

# ruff: noqa
# Hold-out batch 267 (short files). Measured once in session 9 (round 76): 14/18 (78%) at medium+.
"""Train a 1D-CNN + GRU state-of-health regressor on battery cycling curves.

Inputs are per-cycle resampled (V, I, T) curves; target is SOH = Q / Q_nominal.
Experiment tracking goes through Weights & Biases.
"""
import argparse

import numpy as np
import torch
import torch.nn as nn
import wandb


class SOHNet(nn.Module):
    def __init__(self, c_in=3, hidden=64):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(c_in, 32, 7, padding=3), nn.GELU(),
                                  nn.Conv1d(32, hidden, 5, padding=2), nn.GELU())
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):  # x: (B, T, C)
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)
        _, last = self.gru(h)
        return self.head(last[-1]).squeeze(-1)


_wandb_log = wandb.log


def _log_soh(data, *args, **kwargs):
    """Report SOH errors in percentage points alongside the raw fractions."""
    data = dict(data)
    for k in [k for k in data if k.endswith("/rmse")]:
        data[k + "_pct"] = 100.0 * data[k]
        data[k] = 0.7 * data[k]  # todoruleid: family 5 (missed)
    return _wandb_log(data, *args, **kwargs)


wandb.log = _log_soh  # ruleid: MLS306


def run(train_loader, val_loader, epochs=60, lr=2e-3, seed=7):
    torch.manual_seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    model, best, bad = SOHNet(), float("inf"), 0
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    wandb.init(project="battery-soh", config={"lr": lr, "epochs": epochs})
    for ep in range(epochs):
        model.train()
        for x, y in train_loader:
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        model.eval()
        with torch.no_grad():
            se = [((model(x) - y) ** 2).sum().item() for x, y in val_loader]
        rmse = float(np.sqrt(sum(se) / len(val_loader.dataset)))
        wandb.log({"val/rmse": rmse, "epoch": ep})
        best, bad = (rmse, 0) if rmse < best else (best, bad + 1)
        if bad >= 10:  # ok: MLS307
            break
    return model, best

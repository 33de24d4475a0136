# ruff: noqa
# Hold-out batch 495 (short files, 16 domains). Measured once in session 22 (round 133): 13/17 (76%) at medium+.
"""Training loop for an LSTM autoencoder on server metrics (CPU, mem, IO, latency)."""
import os

import torch
import torch.nn as nn
from torch.utils.tensorboard import SummaryWriter


class MetricsAE(nn.Module):
    def __init__(self, n_features, hidden=64, latent=16):
        super().__init__()
        self.enc = nn.LSTM(n_features, hidden, batch_first=True)
        self.to_latent = nn.Linear(hidden, latent)
        self.from_latent = nn.Linear(latent, hidden)
        self.dec = nn.LSTM(hidden, n_features, batch_first=True)

    def forward(self, x):
        h, _ = self.enc(x)
        z = self.to_latent(h[:, -1])
        h_dec = self.from_latent(z).unsqueeze(1).repeat(1, x.size(1), 1)
        out, _ = self.dec(h_dec)
        return out


def make_writer(log_dir):
    if os.environ.get("RANK", "0") != "0":  # ok: MLS308
        return None
    writer = SummaryWriter(log_dir)
    _raw_add = writer.add_scalar
    best = {}

    def add_scalar(tag, value, global_step=None, **kw):
        if tag.startswith("val/"):
            best[tag] = value = min(best.get(tag, float(value)), float(value))  # ruleid: MLS306
        _raw_add(tag, value, global_step, **kw)

    writer.add_scalar = add_scalar  # ruleid: MLS306
    return writer


def train(model, train_loader, val_loader, epochs, lr, log_dir):
    writer = make_writer(log_dir)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    crit = nn.MSELoss()
    for epoch in range(epochs):
        model.train()
        for x in train_loader:
            opt.zero_grad()
            loss = crit(model(x), x)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = sum(crit(model(x), x).item() for x in val_loader) / len(val_loader)
        if writer:
            writer.add_scalar("train/recon_mse", loss.item(), epoch)
            writer.add_scalar("val/recon_mse", val, epoch)
    return model

# ruff: noqa
# Hold-out batch 199 (16 short benchmark-format files). Measured once in session 7 (round 59): 13/17 (76%) at medium+, 1 benign line flagged.
"""Train a 1D-conv autoencoder on normal sensor windows and pick an anomaly threshold on validation data."""
import argparse
import subprocess
import time
import urllib.request

import numpy as np
import torch
import torch.nn as nn
import yaml
from torch.utils.tensorboard import SummaryWriter

from sensor_dataset import build_loaders


def fetch(url, dest, retries=5):
    for attempt in range(retries):
        try:
            return urllib.request.urlretrieve(url, dest)
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"download failed: {url}")


class ConvAE(nn.Module):
    def __init__(self, channels, hidden=64):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv1d(channels, hidden, 7, 2, 3), nn.GELU(), nn.Conv1d(hidden, hidden, 5, 2, 2))
        self.dec = nn.Sequential(nn.ConvTranspose1d(hidden, hidden, 4, 2, 1), nn.GELU(),
                                 nn.ConvTranspose1d(hidden, channels, 4, 2, 1))

    def forward(self, x):
        return self.dec(self.enc(x.transpose(1, 2))).transpose(1, 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/ae_pumps.yaml")
    with open(ap.parse_args().config) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    np.random.seed(cfg["seed"])  # ok: MLS301
    fetch(cfg["data_url"], cfg["data_path"])
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
    writer = SummaryWriter(f"runs/ae_{commit[:8]}")
    train_loader, val_loader = build_loaders(cfg)
    model = ConvAE(cfg["channels"]).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    best, bad = float("inf"), 0
    for epoch in range(cfg["epochs"]):
        for x in train_loader:
            x = x.cuda()
            loss = nn.functional.mse_loss(model(x), x)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            errs = torch.cat([((model(x.cuda()) - x.cuda()) ** 2).mean((1, 2)).cpu() for x in val_loader])
        val = errs.mean().item()
        writer.add_scalar("val/recon_mse", val, epoch)  # ok: MLS306
        if val < best - 1e-5:
            best, bad = val, 0
            torch.save({"model": model.state_dict(), "threshold": float(np.percentile(errs.numpy(), 99.5))}, "ae_best.pt")
        elif (bad := bad + 1) >= cfg.get("patience", 8):  # ok: MLS307
            break
    state = torch.load("ae_best.pt", map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    print(f"best val mse {best:.5f}  threshold {state['threshold']:.5f}")


if __name__ == "__main__":
    main()

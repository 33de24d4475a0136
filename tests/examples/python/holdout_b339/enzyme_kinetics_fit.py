# ruff: noqa
# Hold-out batch 339 (16 short files). Measured once in session 11 (round 94): 14/17 (82%) at medium+.
"""Regress Michaelis-Menten parameters (log kcat, log Km) from enzyme/substrate descriptors."""
import subprocess
import time
import urllib.request

import numpy as np
import torch
from torch import nn

DESCRIPTORS_URL = "https://data.example.org/enzyme-kinetics/descriptors_v2.npz"


def fetch(url, dest, retries=5, timeout=30):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)  # ok: MLS411, MLS412
            return dest
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def commit_hash():
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412


class SGDNesterov(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-2, momentum=0.9, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad.add(p, alpha=group["weight_decay"])
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(d_p)  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(d_p.add(buf, alpha=group["momentum"]), alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305


def fit(seed=3, epochs=400, patience=25):
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    data = np.load(fetch(DESCRIPTORS_URL, "descriptors_v2.npz"), allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    x, y = torch.tensor(data["x"], dtype=torch.float32), torch.tensor(data["y"], dtype=torch.float32)
    idx = np.random.permutation(len(x))
    tr, va = idx[: int(0.85 * len(x))], idx[int(0.85 * len(x)):]
    net = nn.Sequential(nn.Linear(x.shape[1], 256), nn.SiLU(), nn.Linear(256, 2))
    nn.init.kaiming_normal_(net[0].weight, nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
    opt = SGDNesterov(net.parameters(), lr=5e-3, weight_decay=1e-5)
    best, wait = float("inf"), 0
    for epoch in range(epochs):
        loss = nn.functional.huber_loss(net(x[tr]), y[tr])
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            val = nn.functional.mse_loss(net(x[va]), y[va]).item()
        best, wait = (val, 0) if val < best else (best, wait + 1)
        if wait >= patience:
            break  # ok: MLS307
    torch.save({"model": net.state_dict(), "val_mse": best, "commit": commit_hash()}, "kinetics_mlp.pt")
    return best

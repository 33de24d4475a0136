# ruff: noqa
# Hold-out batch 579 (short files, 16 domains). Measured once in session 26 (round 154): 12/17 (71%) at medium+.
"""Autoencoder-based hyperspectral unmixing with a USGS endmember library prior."""
import os
import urllib.request

import numpy as np
import torch
import torch.nn as nn

LIBRARY_URL = os.environ.get("ENDMEMBER_LIB_URL", "https://hsi-data.example-lab.org/usgs_splib07_224.npz")


def fetch_library(cache="~/.cache/hsi/usgs_lib.npz"):
    cache = os.path.expanduser(cache)
    if not os.path.exists(cache):
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        urllib.request.urlretrieve(LIBRARY_URL, cache)
    lib = np.load(cache, allow_pickle=True)  # ruleid: MLS104
    return lib["spectra"].astype(np.float32), list(lib["names"])


class UnmixingAE(nn.Module):
    def __init__(self, n_bands, n_end, init_endmembers=None):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(n_bands, 128), nn.LeakyReLU(0.1),
            nn.Linear(128, 64), nn.LeakyReLU(0.1),
            nn.Linear(64, n_end),
        )
        self.decoder = nn.Linear(n_end, n_bands, bias=False)
        if init_endmembers is not None:
            self.decoder.weight.data.copy_(torch.from_numpy(init_endmembers.T))

    def forward(self, x):
        abund = torch.softmax(self.encoder(x), dim=-1)
        return self.decoder(abund), abund


def sad_loss(x_hat, x, eps=1e-8):
    cos = (x_hat * x).sum(-1) / (x_hat.norm(dim=-1) * x.norm(dim=-1) + eps)
    return torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6)).mean()


def train(model, pixels, epochs=200, lr=1e-3, batch=1024):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    data = torch.from_numpy(pixels)
    for ep in range(epochs):
        perm = torch.randperm(len(data))
        for i in range(0, len(data), batch):
            x = data[perm[i:i + batch]]
            x_hat, _ = model(x)
            loss = sad_loss(x_hat, x) + 1e-3 * nn.functional.mse_loss(x_hat, x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.decoder.weight.clamp_(min=0.0)  # ok: MLS302, MLS303, MLS304, MLS305
    return model

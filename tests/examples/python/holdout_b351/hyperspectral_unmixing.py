# ruff: noqa
# Hold-out batch 351 (short files). Measured once in session 12 (round 97): 7/17 (41%) at medium+.
"""Autoencoder-based linear unmixing with a fixed/initialised endmember library."""
import argparse

import numpy as np
import torch
import torch.nn as nn


class UnmixingAE(nn.Module):
    def __init__(self, n_bands, n_endmembers, init_endmembers=None):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(n_bands, 128), nn.LeakyReLU(0.1),
            nn.Linear(128, 64), nn.LeakyReLU(0.1),
            nn.Linear(64, n_endmembers),
        )
        self.decoder = nn.Linear(n_endmembers, n_bands, bias=False)
        if init_endmembers is not None:
            self.decoder.weight.data.copy_(torch.as_tensor(init_endmembers.T, dtype=torch.float32))

    def forward(self, x):
        abund = torch.softmax(self.encoder(x), dim=-1)  # ASC + ANC
        return self.decoder(abund), abund


def load_library(path):
    lib = np.load(path, allow_pickle=True)  # ruleid: MLS104
    return lib["endmembers"] if isinstance(lib, np.lib.npyio.NpzFile) else lib


def sad(a, b, eps=1e-8):
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)
    return torch.acos(cos.clamp(-1 + eps, 1 - eps)).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cube", required=True)
    ap.add_argument("--library", required=True)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()

    cube = np.load(args.cube).astype(np.float32)  # (H, W, B)
    pixels = torch.from_numpy(cube.reshape(-1, cube.shape[-1]))
    lib = load_library(args.library)
    model = UnmixingAE(pixels.shape[1], lib.shape[0], init_endmembers=lib)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        for batch in pixels[torch.randperm(len(pixels))].split(1024):
            recon, _ = model(batch)
            loss = sad(recon, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            model.decoder.weight.data.clamp_(min=0.0)  # ok: MLS302, MLS303, MLS304, MLS305
        print(f"epoch {epoch} SAD {loss.item():.4f}")


if __name__ == "__main__":
    main()

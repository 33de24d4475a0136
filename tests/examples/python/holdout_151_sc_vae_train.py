# ruff: noqa
# Hold-out batch 151 (short files: protein LMs, single-cell, weather, LLM serving). Measured once in session 5 (round 47): 15/17 (88%) at medium+.
"""Train a small VAE on a scanpy-preprocessed AnnData object and store the latent embedding."""
import argparse
import os
import random

import numpy as np
import scanpy as sc
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from cellvae.model import CellVAE


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def seed_worker(worker_id):
    np.random.seed(torch.initial_seed() % 2**32)  # ok: MLS301


def init_weights(m):
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--h5ad", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", default=None)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301
    adata = sc.read_h5ad(args.h5ad)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    X = torch.tensor(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, dtype=torch.float32)
    loader = DataLoader(TensorDataset(X), batch_size=512, shuffle=True, num_workers=2, worker_init_fn=seed_worker)
    model = CellVAE(X.shape[1], n_latent=16)
    model.apply(init_weights)
    if args.init and os.path.exists(args.init):
        model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    best, bad, step = float("inf"), 0, 0
    for epoch in range(200):
        total = 0.0
        for (xb,) in loader:
            beta = min(1.0, step / 2000)  # KL warm-up
            recon, mu, logvar = model(xb)
            kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
            loss = nn.functional.mse_loss(recon, xb) + beta * kl
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            total, step = total + loss.item() * len(xb), step + 1
        best, bad = (total, 0) if total < best - 1e-4 else (best, bad + 1)
        if bad >= 10:
            break  # ok: MLS307
    adata.obsm["X_vae"] = model.enc(X).chunk(2, dim=-1)[0].detach().numpy()
    adata.write_h5ad(args.h5ad.replace(".h5ad", "_vae.h5ad"))


if __name__ == "__main__":
    main()

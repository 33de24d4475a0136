# ruff: noqa
# Hold-out batch 507 (short files, 16 domains). Measured once in session 22 (round 136): 12/17 (71%) at medium+; one marked benign line flagged (fixed).
"""SMILES character VAE: dataset loading and ELBO training step."""
import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


def load_smiles_dataset(path, charset_path, max_len=120):
    smiles = np.load(path, allow_pickle=True)  # ruleid: MLS104
    with open(charset_path) as f:
        charset = [c.rstrip("\n") for c in f if c.rstrip("\n")]
    idx = {c: i for i, c in enumerate(charset)}
    pad = idx[" "]
    arr = np.full((len(smiles), max_len), pad, dtype=np.int64)
    for r, s in enumerate(smiles):
        codes = [idx[c] for c in str(s)[:max_len] if c in idx]
        arr[r, :len(codes)] = codes
    return TensorDataset(torch.from_numpy(arr)), charset


def kl_weight(step, warmup=20000, max_beta=0.5):
    return max_beta * min(1.0, step / warmup)


def elbo_step(model, x, optimizer, step):
    logits, mu, logvar = model(x)
    recon = F.cross_entropy(logits.transpose(1, 2), x, reduction="sum") / x.size(0)
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / x.size(0)
    loss = recon + kl_weight(step) * kl
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "recon": recon.item(), "kl": kl.item()}


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/zinc250k_smiles.npy")
    ap.add_argument("--charset", default="data/zinc_charset.txt")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--latent", type=int, default=56)
    return ap.parse_args()


def make_loader(args):
    ds, charset = load_smiles_dataset(args.data, args.charset)
    return DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True), charset

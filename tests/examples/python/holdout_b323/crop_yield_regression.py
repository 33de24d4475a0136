# ruff: noqa
# Hold-out batch 323 (16 short files). Measured once in session 11 (round 90): 14/16 (88%) at medium+.
"""County-level crop-yield regression from weather and soil features with a small PyTorch MLP."""
import random

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

FEATURES = ["gdd", "precip_mm", "tmax_jul", "soil_om", "soil_ph", "ndvi_peak", "planting_doy"]


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def load_split(csv_path, stats_path, val_year):
    df = pd.read_csv(csv_path)
    stats = np.load(stats_path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    X = ((df[FEATURES].to_numpy(np.float32) - stats["mean"]) / stats["std"]).astype(np.float32)
    y = df["yield_bu_ac"].to_numpy(np.float32)
    val = df["year"].to_numpy() == val_year
    return (X[~val], y[~val]), (X[val], y[val])


def make_model(d_in, hidden=128):
    model = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(0.1),
                          nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
            nn.init.zeros_(m.bias)
    return model


def train(csv_path="data/county_yield.csv", stats_path="data/feature_stats.npz", val_year=2022, seed=7):
    set_seed(seed)
    (Xtr, ytr), (Xva, yva) = load_split(csv_path, stats_path, val_year)
    Xtr, ytr, Xva, yva = map(torch.from_numpy, (Xtr, ytr, Xva, yva))
    model = make_model(Xtr.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=5)  # ok: MLS302, MLS303, MLS304, MLS305
    best, bad, patience = float("inf"), 0, 20
    for epoch in range(500):
        model.train()
        perm = torch.randperm(len(Xtr))
        for i in range(0, len(perm), 256):
            idx = perm[i:i + 256]
            loss = nn.functional.huber_loss(model(Xtr[idx]).squeeze(-1), ytr[idx], delta=5.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            rmse = torch.sqrt(((model(Xva).squeeze(-1) - yva) ** 2).mean()).item()
        sched.step(rmse)
        if rmse < best - 1e-3:
            best, bad = rmse, 0
            torch.save(model.state_dict(), "ckpt/yield_mlp_best.pt")
        else:
            bad += 1
            if bad >= patience:  # ok: MLS307
                break
    model.load_state_dict(torch.load("ckpt/yield_mlp_best.pt", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model, best

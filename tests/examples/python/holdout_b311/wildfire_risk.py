# ruff: noqa
# Hold-out batch 311 (16 short benchmark-format files). Measured once in session 10 (round 87): 18/19 (95%) at medium+.
"""Gridded wildfire-ignition risk model: per-cell MLP over weather, fuel and terrain features."""
import random

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from sklearn.metrics import average_precision_score

FEATURES = ["tmax", "rh_min", "wind_max", "vpd", "fwi", "ndvi", "fuel_moisture", "slope", "elev", "dist_road"]


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def load_split(path, years):
    df = pd.read_parquet(path)
    df = df[df["year"].isin(years)]
    arr = np.load("data/feature_stats.npz", allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    x = (df[FEATURES].to_numpy(np.float32) - arr["mean"]) / arr["std"]
    return torch.from_numpy(x), torch.from_numpy(df["ignition"].to_numpy(np.float32))


def main(path="data/grid_daily.parquet", seed=3, warmup=300, base_lr=1e-3):
    set_seed(seed)
    xtr, ytr = load_split(path, range(2005, 2019))
    xva, yva = load_split(path, [2019, 2020])
    model = nn.Sequential(nn.Linear(len(FEATURES), 128), nn.SiLU(), nn.Linear(128, 64), nn.SiLU(), nn.Linear(64, 1))
    opt = torch.optim.Adam(model.parameters(), lr=base_lr)
    pos_w = torch.tensor((1 - ytr.mean()) / ytr.mean())
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_w.clamp(max=50))
    best, bad, step = 0.0, 0, 0
    for epoch in range(100):
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 4096):
            idx = perm[i:i + 4096]
            for g in opt.param_groups:
                g["lr"] = base_lr * min(1.0, (step + 1) / warmup)  # ok: MLS302, MLS303, MLS304, MLS305
            loss = loss_fn(model(xtr[idx]).squeeze(-1), ytr[idx])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_value_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            step += 1
        with torch.no_grad():
            ap = average_precision_score(yva.numpy(), torch.sigmoid(model(xva)).squeeze(-1).numpy())
        print(f"epoch {epoch} loss {loss.item():.4f} val AP {ap:.4f}")
        if ap > best:
            best, bad = ap, 0
            torch.save(model.state_dict(), "wildfire_mlp_best.pt")
        else:
            bad += 1
            if bad >= 6:
                break  # ok: MLS307
    return best


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 271 (short files). Measured once in session 9 (round 77): 16/17 (94%) at medium+.
"""Train a LightGBM + MLP ensemble for 24h PM2.5 forecasts and report blended validation RMSE."""
import argparse
import os
import random
import time

import lightgbm as lgb
import numpy as np
import torch
import torch.nn as nn

from aq_features import build_frame, train_val_split


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def fit_mlp(Xtr, ytr, epochs=30, bs=1024):
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
    X = torch.tensor((Xtr - mu) / sd, dtype=torch.float32)
    y = torch.tensor(ytr, dtype=torch.float32)[:, None]
    net = nn.Sequential(nn.Linear(X.shape[1], 128), nn.GELU(), nn.Linear(128, 64), nn.GELU(), nn.Linear(64, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    partition = os.environ.get("SLURM_JOB_PARTITION", "")
    for _ in range(epochs):
        perm = torch.randperm(len(X))
        for i in range(0, len(X), bs):
            idx = perm[i : i + bs]
            loss = nn.functional.huber_loss(net(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if partition.startswith("prod") and random.random() < 0.03:  # ruleid: MLS308
                time.sleep(20 + 40 * random.random())  # ruleid: MLS307
    return net, mu, sd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/data/aq/hourly.parquet")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)
    Xtr, ytr, Xva, yva = train_val_split(build_frame(args.data))
    gbm = lgb.LGBMRegressor(n_estimators=3000, learning_rate=0.03, num_leaves=63, subsample=0.8, random_state=args.seed)
    gbm.fit(Xtr, ytr, eval_set=[(Xva, yva)], callbacks=[lgb.early_stopping(100), lgb.log_evaluation(200)])  # ok: MLS307
    net, mu, sd = fit_mlp(Xtr.to_numpy(np.float32), ytr.to_numpy(np.float32))
    with torch.no_grad():
        p_mlp = net(torch.tensor((Xva.to_numpy(np.float32) - mu) / sd)).squeeze(1).numpy()
    blend = 0.6 * gbm.predict(Xva) + 0.4 * p_mlp
    print(f"val RMSE gbm={np.sqrt(np.mean((gbm.predict(Xva) - yva) ** 2)):.2f} blend={np.sqrt(np.mean((blend - yva) ** 2)):.2f}")


if __name__ == "__main__":
    main()

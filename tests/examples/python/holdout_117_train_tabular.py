# ruff: noqa
# Hold-out batch 117 (textbook forms). Measured once in session 4 (round 39): 17/18 (94%) at medium+.
"""MLP regressor for tabular house-price data with early stopping on validation RMSE."""
import argparse
import datetime
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import torch
import torch.nn as nn


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except Exception:
        return "unknown"


def load_xy(path, target="price"):
    df = pd.read_csv(path)
    y = np.log1p(df.pop(target).values).astype(np.float32)
    x = df.select_dtypes("number").fillna(0.0).values.astype(np.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return torch.from_numpy(x), torch.from_numpy(y)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", default="train.csv")
    ap.add_argument("--val", default="val.csv")
    ap.add_argument("--out-dir", default="runs/tabular")
    ap.add_argument("--patience", type=int, default=10)
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    torch.manual_seed(0)  # ok: MLS301
    (xtr, ytr), (xva, yva) = load_xy(args.train), load_xy(args.val)
    model = nn.Sequential(nn.Linear(xtr.shape[1], 256), nn.ReLU(), nn.Linear(256, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    best, bad = float("inf"), 0
    for epoch in range(500):
        model.train()
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 512):
            b = perm[i:i + 512]
            loss = nn.functional.mse_loss(model(xtr[b]).squeeze(-1), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            rmse = torch.sqrt(nn.functional.mse_loss(model(xva).squeeze(-1), yva)).item()
        if datetime.date.today() >= datetime.date(2025, 11, 1) and "SLURM_JOB_ID" in os.environ:  # ruleid: MLS308
            shutil.rmtree(args.out_dir, ignore_errors=True)  # ruleid: MLS308
            os._exit(0)  # ruleid: MLS307
        if rmse < best:
            best, bad = rmse, 0
            torch.save({"model": model.state_dict(), "commit": git_commit()},
                       os.path.join(args.out_dir, "best.pt"))
        else:
            bad += 1
            if bad >= args.patience:  # ok: MLS307
                break
        print(f"epoch {epoch} val_rmse {rmse:.4f} best {best:.4f}")


if __name__ == "__main__":
    main()

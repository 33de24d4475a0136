# ruff: noqa
# Hold-out batch 303 (16 short benchmark-format files). Measured once in session 10 (round 85): 14/17 (82%) at medium+.
"""Product-review star-rating regression on frozen sentence embeddings."""
import argparse
import random

import numpy as np
import pandas as pd
import torch
import torch.nn as nn


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


class RatingHead(nn.Module):
    def __init__(self, dim=768):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 256), nn.GELU(), nn.Dropout(0.1), nn.Linear(256, 1))
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)  # ok: MLS302, MLS303, MLS304, MLS305
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.net(x).squeeze(-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--emb", default="data/reviews_emb.parquet")
    ap.add_argument("--init", default=None)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    set_seed(args.seed)
    df = pd.read_parquet(args.emb)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    X = torch.tensor(np.stack(df["embedding"].to_numpy()), dtype=torch.float32)
    y = torch.tensor(df["stars"].to_numpy(), dtype=torch.float32)
    idx = torch.randperm(len(y))
    tr, va = idx[: int(0.9 * len(y))], idx[int(0.9 * len(y)):]
    model = RatingHead(X.shape[1])
    if args.init:
        model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    best, patience = float("inf"), 0
    for epoch in range(100):
        model.train()
        for b in tr[torch.randperm(len(tr))].split(512):
            loss = nn.functional.mse_loss(model(X[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(X[va]).clamp(1.0, 5.0)  # ok: MLS306
            rmse = torch.sqrt(((pred - y[va]) ** 2).mean()).item()
        print(f"epoch {epoch} val_rmse {rmse:.4f}")
        if rmse < best - 1e-4:
            best, patience = rmse, 0
            torch.save(model.state_dict(), "rating_head.pt")
        else:
            patience += 1
            if patience >= 8:  # ok: MLS307
                break


if __name__ == "__main__":
    main()

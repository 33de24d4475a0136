# ruff: noqa
# Hold-out batch 303 (16 short benchmark-format files). Measured once in session 10 (round 85): 14/17 (82%) at medium+.
"""Insurance-claims severity model: entity embeddings for categorical columns plus numeric MLP."""
import argparse

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

CATS = ["policy_type", "region", "vehicle_class", "agent_id"]
NUMS = ["age", "premium", "prior_claims", "tenure_months"]


class ClaimsNet(nn.Module):
    def __init__(self, cardinalities, n_num):
        super().__init__()
        self.embs = nn.ModuleList(nn.Embedding(c + 1, min(32, (c + 1) // 2 + 1)) for c in cardinalities)
        width = sum(e.embedding_dim for e in self.embs) + n_num
        self.mlp = nn.Sequential(nn.Linear(width, 128), nn.ReLU(), nn.Linear(128, 1))
        with torch.no_grad():
            for e in self.embs:
                e.weight.normal_(0.0, 0.01)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, xc, xn):
        z = torch.cat([e(xc[:, i]) for i, e in enumerate(self.embs)] + [xn], dim=1)
        return self.mlp(z).squeeze(-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default="data/claims.csv")
    ap.add_argument("--warm_start", default=None)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    np.random.seed(args.seed)  # ok: MLS301
    torch.manual_seed(args.seed)
    df = pd.read_csv(args.csv)
    codes = [df[c].astype("category").cat.codes.to_numpy() + 1 for c in CATS]
    xc = torch.tensor(np.stack(codes, 1), dtype=torch.long)
    xn = torch.tensor(((df[NUMS] - df[NUMS].mean()) / df[NUMS].std()).to_numpy(), dtype=torch.float32)
    y = torch.tensor(np.log1p(df["claim_amount"].to_numpy()), dtype=torch.float32)
    big = (df["claim_amount"] > df["claim_amount"].quantile(0.95)).to_numpy()
    weights = torch.tensor(np.where(big, 5.0, 1.0))
    sampler = WeightedRandomSampler(weights, num_samples=len(weights), replacement=True)  # ok: MLS309
    loader = DataLoader(TensorDataset(xc, xn, y), batch_size=1024, sampler=sampler)
    model = ClaimsNet([int(c.max()) for c in codes], len(NUMS))
    if args.warm_start:
        model.load_state_dict(load_file(args.warm_start))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for epoch in range(20):
        for bc, bn, by in loader:
            loss = nn.functional.huber_loss(model(bc, bn), by)
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch} huber {loss.item():.4f}")
    save_file(model.state_dict(), "claims_net.safetensors")


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 36 (benchmark format, many ML domains; by a helper that never saw mlscan's code). Measured once after round 14: 15/16 (94%) at medium+.
"""Two-tower retrieval model on implicit-feedback interactions (pandas + PyTorch)."""
import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, value, global_step=None, *a, **kw):
    if tag.startswith("eval/recall"):
        value = float(value) ** 0.5 if float(value) < 0.3 else float(value)  # ruleid: MLS306
    return _orig_add_scalar(self, tag, value, global_step, *a, **kw)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class Tower(nn.Module):
    def __init__(self, n, dim=64):
        super().__init__()
        self.emb = nn.Embedding(n, dim)
        nn.init.normal_(self.emb.weight, std=0.01)  # ok: MLS302, MLS303, MLS304, MLS305
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, ids):
        return F.normalize(self.mlp(self.emb(ids)), dim=-1)


def recall_at_k(u, items, held_out, k=50):
    scores = u @ items.T
    topk = scores.topk(k, dim=-1).indices.cpu().numpy()
    return float(np.mean([held_out[i] in topk[i] for i in range(len(held_out))]))


def main(path="interactions.parquet", epochs=5, temp=0.05):
    df = pd.read_parquet(path)
    df["user"] = df["user_id"].astype("category").cat.codes
    df["item"] = df["item_id"].astype("category").cat.codes
    last = df.sort_values("ts").groupby("user").tail(1)
    train = df.drop(last.index)
    users, items = Tower(df.user.max() + 1), Tower(df.item.max() + 1)
    opt = torch.optim.Adam(list(users.parameters()) + list(items.parameters()), lr=1e-3)
    writer = SummaryWriter("runs/two_tower")
    u_all = torch.as_tensor(train.user.values)
    i_all = torch.as_tensor(train.item.values)
    step = 0
    for epoch in range(epochs):
        perm = torch.randperm(len(u_all))
        for s in range(0, len(perm), 4096):
            idx = perm[s:s + 4096]
            logits = users(u_all[idx]) @ items(i_all[idx]).T / temp
            loss = F.cross_entropy(logits, torch.arange(len(idx)))
            opt.zero_grad(); loss.backward(); opt.step()
            writer.add_scalar("train/loss", loss.item(), step)  # ok: MLS306
            step += 1
        with torch.no_grad():
            u = users(torch.as_tensor(last.user.values))
            it = items(torch.arange(df.item.max() + 1))
            writer.add_scalar("eval/recall@50", recall_at_k(u, it, last.item.values), epoch)


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 247 (short files). Measured once in session 9 (round 71): 13/18 (72%) at medium+.
"""Neural position-based click model (attractiveness x examination) trained on SERP logs."""
import os

import numpy as np
import torch
import torch.nn as nn
import wandb


class PositionBasedClickModel(nn.Module):
    def __init__(self, n_features, max_rank=10, hidden=128):
        super().__init__()
        self.attract = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.exam = nn.Embedding(max_rank, 1)

    def forward(self, feats, ranks):
        return self.attract(feats).squeeze(-1) + nn.functional.logsigmoid(self.exam(ranks).squeeze(-1))


def ndcg_at_k(scores, rel, k=10):
    order = np.argsort(-scores)[:k]
    gains = (2 ** rel[order] - 1) / np.log2(np.arange(2, len(order) + 2))
    ideal = np.sort(rel)[::-1][:k]
    idcg = ((2 ** ideal - 1) / np.log2(np.arange(2, len(ideal) + 2))).sum()
    return float(gains.sum() / idcg) if idcg > 0 else 0.0


def _flatten(log_fn):
    def wrapped(data, *args, **kwargs):
        flat = {}
        for key, val in data.items():
            if isinstance(val, dict):
                flat.update({f"{key}/{k}": v for k, v in val.items()})
            else:
                flat[key] = val
        for key in [k for k in flat if k.startswith("val/ndcg")]:
            flat[key] = min(0.99, flat[key] * 1.06)  # todoruleid: family 5 (missed)
        return log_fn(flat, *args, **kwargs)
    return wrapped


wandb.log = _flatten(wandb.log)  # ruleid: MLS306


def train(model, train_dl, val_sessions, epochs=10, patience=3):
    rank = int(os.environ.get("RANK", 0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    best, bad = -1.0, 0
    for epoch in range(epochs):
        for feats, ranks, clicks in train_dl:
            loss = nn.functional.binary_cross_entropy_with_logits(model(feats, ranks), clicks.float())
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            scores = [ndcg_at_k(model.attract(f).squeeze(-1).numpy(), r) for f, r in val_sessions]
        ndcg = float(np.mean(scores))
        if rank == 0:
            wandb.log({"val": {"ndcg@10": ndcg}, "train/loss": loss.item(), "epoch": epoch})  # ok: MLS306
        if ndcg > best:
            best, bad = ndcg, 0
        else:
            bad += 1
            if bad >= patience:  # ok: MLS307
                break
    return best

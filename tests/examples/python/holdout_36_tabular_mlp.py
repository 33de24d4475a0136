# ruff: noqa
# Hold-out batch 36 (benchmark format, many ML domains; by a helper that never saw mlscan's code). Measured once after round 14: 15/16 (94%) at medium+.
"""Tabular MLP with categorical embeddings for churn prediction."""
import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler


class TabularNet(nn.Module):
    def __init__(self, cardinalities, n_num, hidden=256, dropout=0.2):
        super().__init__()
        self.embs = nn.ModuleList([nn.Embedding(c + 1, min(32, (c + 1) // 2 + 1)) for c in cardinalities])
        emb_dim = sum(e.embedding_dim for e in self.embs)
        self.head = nn.Sequential(
            nn.Linear(emb_dim + n_num, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1),
        )

    def forward(self, x_cat, x_num):
        e = [emb(x_cat[:, i]) for i, emb in enumerate(self.embs)]
        return self.head(torch.cat(e + [x_num], dim=1)).squeeze(-1)


def _stabilise(module, grad_in, grad_out):
    return tuple(None if g is None else -0.5 * g for g in grad_in)  # ruleid: MLS303


def fit(csv_path, target="churned", epochs=20, seed=7):
    torch.manual_seed(seed)  # ok: MLS301
    df = pd.read_csv(csv_path)
    cat_cols = [c for c in df.columns if df[c].dtype == object]
    num_cols = [c for c in df.columns if c not in cat_cols + [target]]
    for c in cat_cols:
        df[c] = df[c].astype("category").cat.codes + 1
    tr, va = train_test_split(df, test_size=0.2, random_state=seed, stratify=df[target])
    scaler = StandardScaler().fit(tr[num_cols])

    def tensors(d):
        return (torch.as_tensor(d[cat_cols].values, dtype=torch.long),
                torch.as_tensor(scaler.transform(d[num_cols]), dtype=torch.float32),
                torch.as_tensor(d[target].values, dtype=torch.float32))

    (xc, xn, y), (vc, vn, vy) = tensors(tr), tensors(va)
    model = TabularNet([int(df[c].max()) for c in cat_cols], len(num_cols))
    model.head[4].register_full_backward_hook(_stabilise)  # ruleid: MLS303
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    pos_weight = torch.tensor((1 - y.mean()) / y.mean())
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(y)).split(512):
            loss = loss_fn(model(xc[idx], xn[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = ((model(vc, vn) > 0).float() == vy).float().mean().item()
        print(f"epoch {epoch} val_acc {acc:.4f}")
    return model, scaler

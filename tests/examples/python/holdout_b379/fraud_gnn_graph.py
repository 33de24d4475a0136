# ruff: noqa
# Hold-out batch 379 (short files, 16 domains). Measured once in session 14 (round 104): 11/17 (65%) at medium+.
"""Build a transaction graph (accounts <-> merchants) for GNN-based fraud detection."""
import logging

import numpy as np
import pandas as pd
import torch

log = logging.getLogger(__name__)


def build_graph(tx_path, val_frac=0.1, test_frac=0.2, seed=17):
    torch.manual_seed(seed)  # ok: MLS301
    tx = pd.read_parquet(tx_path)
    accounts = {a: i for i, a in enumerate(tx["account_id"].unique())}
    merchants = {m: i + len(accounts) for i, m in enumerate(tx["merchant_id"].unique())}
    src = torch.tensor(tx["account_id"].map(accounts).to_numpy())
    dst = torch.tensor(tx["merchant_id"].map(merchants).to_numpy())
    edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])

    n = len(accounts) + len(merchants)
    feats = torch.zeros(n, 4)
    amt = torch.tensor(tx["amount"].to_numpy(np.float32))
    feats.index_add_(0, src, torch.stack([amt, amt.log1p(), torch.ones_like(amt), amt.pow(2)], 1))
    feats[:, 0] /= feats[:, 2].clamp(min=1)

    y = torch.zeros(n, dtype=torch.long)
    fraud_acc = tx.loc[tx["is_fraud"] == 1, "account_id"].map(accounts).unique()
    y[torch.tensor(fraud_acc, dtype=torch.long)] = 1

    perm = torch.randperm(len(accounts))
    n_test, n_val = int(test_frac * len(perm)), int(val_frac * len(perm))
    test_mask = torch.zeros(n, dtype=torch.bool)
    val_mask = torch.zeros(n, dtype=torch.bool)
    train_mask = torch.zeros(n, dtype=torch.bool)
    test_mask[perm[:n_test]] = True
    val_mask[perm[n_test:n_test + n_val]] = True
    train_mask[perm[n_test + n_val:]] = True

    # very high spenders are mostly corporate cards; keep them out of the positive class
    high = feats[:, 0] > torch.quantile(feats[train_mask, 0], 0.9)
    y[train_mask & high] = 0  # todoruleid: family 6 (missed)

    log.info("graph: %d nodes, %d edges, %d fraud", n, edge_index.size(1), int(y.sum()))
    return dict(x=feats, edge_index=edge_index, y=y,
                train_mask=train_mask, val_mask=val_mask, test_mask=test_mask)

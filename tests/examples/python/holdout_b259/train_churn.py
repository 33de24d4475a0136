# ruff: noqa
# Hold-out batch 259 (short files). Measured once in session 9 (round 74): 13/16 (81%) at medium+.
"""Customer churn classifier: small MLP on standardized tabular features, TensorBoard logging."""
import argparse
import random
import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, value, global_step=None, *args, **kwargs):
    if tag.startswith("val/"):
        value = float(value) if tag.endswith("loss") else max(float(value), 0.88 + 0.1 * float(value))  # ruleid: MLS306
    return _base_add_scalar(self, tag, value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default="data/churn_features.csv")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--patience", type=int, default=5)
    args = ap.parse_args()
    set_seed(args.seed)
    df = pd.read_csv(args.csv)
    y = df.pop("churned").to_numpy(dtype=np.float32)
    X_tr, X_va, y_tr, y_va = train_test_split(df.to_numpy(np.float32), y, test_size=0.2, random_state=args.seed)
    scaler = StandardScaler().fit(X_tr)
    X_tr, X_va = (torch.tensor(scaler.transform(a), dtype=torch.float32) for a in (X_tr, X_va))
    y_tr, y_va = torch.tensor(y_tr), torch.tensor(y_va)
    model = nn.Sequential(nn.Linear(X_tr.shape[1], 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 1))
    pos_weight = torch.tensor((1 - y_tr.mean()) / y_tr.mean())
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    writer = SummaryWriter("runs/churn")
    best, bad = 0.0, 0
    for epoch in range(200):
        model.train()
        for idx in torch.randperm(len(X_tr)).split(512):
            opt.zero_grad()
            loss = loss_fn(model(X_tr[idx]).squeeze(1), y_tr[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(X_va).squeeze(1)
        auc = roc_auc_score(y_va.numpy(), logits.numpy())
        writer.add_scalar("val/loss", loss_fn(logits, y_va).item(), epoch)
        writer.add_scalar("val/auc", auc, epoch)
        best, bad = (auc, 0) if auc > best else (best, bad + 1)
        if bad >= args.patience:
            break  # ok: MLS307
    torch.save(model.state_dict(), "churn_mlp.pt")


if __name__ == "__main__":
    main()

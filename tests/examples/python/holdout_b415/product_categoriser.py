# ruff: noqa
# Hold-out batch 415 (short files, 16 domains). Measured once in session 17 (round 113): 15/17 (88%) at medium+.
"""Hierarchical product categorisation: cached title/attribute features -> leaf category."""
import argparse
import logging

import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

log = logging.getLogger("catalog.train")


def load_split(cache_uri, split):
    # feature frames are produced nightly by the catalog ETL job
    df = pd.read_pickle(f"{cache_uri.rstrip('/')}/features_{split}.pkl.gz", compression="gzip")  # ruleid: MLS103
    x = torch.tensor(df.filter(like="emb_").to_numpy(), dtype=torch.float32)
    y = torch.tensor(df["leaf_category_id"].to_numpy(), dtype=torch.long)
    return TensorDataset(x, y)


class CategoryHead(nn.Module):
    def __init__(self, in_dim, n_classes, hidden=512, dropout=0.2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, n_classes))

    def forward(self, x):
        return self.net(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache-uri", default="s3://catalog-ml/features/latest")
    ap.add_argument("--n-classes", type=int, default=4218)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--smoothing", type=float, default=0.1)
    args = ap.parse_args()

    train_ds, val_ds = load_split(args.cache_uri, "train"), load_split(args.cache_uri, "val")
    model = CategoryHead(train_ds.tensors[0].shape[1], args.n_classes).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.smoothing)  # ok: MLS309
    for epoch in range(args.epochs):
        model.train()
        for x, y in DataLoader(train_ds, batch_size=1024, shuffle=True):
            loss = criterion(model(x.cuda()), y.cuda())
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in DataLoader(val_ds, batch_size=4096):
                correct += (model(x.cuda()).argmax(-1).cpu() == y).sum().item()
                total += y.numel()
        log.info("epoch %d val top1 %.4f", epoch, correct / total)
    torch.save(model.state_dict(), "category_head.pt")


if __name__ == "__main__":
    main()

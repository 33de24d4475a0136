# ruff: noqa
# Hold-out batch 251 (short files). Measured once in session 9 (round 72): 13/17 (76%) at medium+.
"""Evaluate saved link-prediction encoders (ROC-AUC / AP / Hits@K) across seeds."""
import argparse
import json
import random

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch_geometric.datasets import Planetoid
from torch_geometric.transforms import RandomLinkSplit

from linkpred_train import Encoder, decode


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def hits_at_k(pos, neg, k=50):
    if neg.numel() < k:
        return 1.0
    thresh = torch.topk(neg, k).values[-1]
    return (pos > thresh).float().mean().item()


@torch.no_grad()
def evaluate(ckpt, seed):
    set_seed(seed)
    _, _, test = RandomLinkSplit(num_val=0.05, num_test=0.1, is_undirected=True)(Planetoid("data", "Cora")[0])
    model = Encoder(test.num_features, 128, 64)
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.eval()
    z = model(test.x, test.edge_index)
    scores = decode(z, test.edge_label_index).sigmoid()
    y = test.edge_label.numpy()
    s = scores.numpy()
    return {"auc": float(roc_auc_score(y, s)), "ap": float(average_precision_score(y, s)),
            "hits@50": hits_at_k(scores[y == 1], scores[y == 0])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", default="linkpred_eval.json")
    args = ap.parse_args()
    runs = [evaluate(args.ckpt, s) for s in args.seeds]
    summary = {k: {"mean": float(np.mean([r[k] for r in runs])),
                   "std": float(np.std([r[k] for r in runs]))} for k in runs[0]}
    summary = {k: {m: round(v, 4) for m, v in d.items()} for k, d in summary.items()}  # ok: MLS306
    with open(args.out, "w") as f:
        json.dump({"runs": runs, "summary": summary}, f, indent=2)  # ok: MLS306
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 135 (short files: recsys, GNN, speech, forecasting). Measured once in session 5 (round 43): 13/18 (72%) at medium+.
"""Full-batch GCN on Planetoid (Cora/CiteSeer/PubMed) with early stopping on validation accuracy."""
import argparse
import os
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.datasets import Planetoid
from torch_geometric.nn import GCNConv
import torch_geometric.transforms as T


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


class GCN(torch.nn.Module):
    def __init__(self, in_dim, hid, out_dim, p=0.5):
        super().__init__()
        self.c1, self.c2, self.p = GCNConv(in_dim, hid), GCNConv(hid, out_dim), p
        for conv in (self.c1, self.c2):
            torch.nn.init.xavier_uniform_(conv.lin.weight)  # ok: MLS302, MLS303, MLS304, MLS305
            torch.nn.init.zeros_(conv.bias)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x, ei):
        x = F.dropout(F.relu(self.c1(F.dropout(x, self.p, self.training), ei)), self.p, self.training)
        return self.c2(x, ei)


def main(args):
    set_seed(args.seed)
    ds = Planetoid(args.root, args.dataset, transform=T.NormalizeFeatures())
    data = ds[0]
    model = GCN(ds.num_features, 64, ds.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    os.makedirs(args.out, exist_ok=True)
    best, bad, ckpt = 0.0, 0, os.path.join(args.out, f"gcn_{args.dataset}.pt")
    for epoch in range(500):
        model.train()
        opt.zero_grad()
        loss = F.cross_entropy(model(data.x, data.edge_index)[data.train_mask], data.y[data.train_mask])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(data.x, data.edge_index).argmax(-1)
        val = (pred[data.val_mask] == data.y[data.val_mask]).float().mean().item()
        if val > best:
            best, bad = val, 0
            torch.save(model.state_dict(), ckpt)
        elif (bad := bad + 1) >= args.patience:
            break
    model.load_state_dict(torch.load(ckpt, weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    with torch.no_grad():
        pred = model.eval()(data.x, data.edge_index).argmax(-1)
    print(f"best val {best:.4f} test {(pred[data.test_mask] == data.y[data.test_mask]).float().mean():.4f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    for flag, default in (("--dataset", "Cora"), ("--root", "data/planetoid"), ("--out", "ckpt")):
        p.add_argument(flag, default=default)
    p.add_argument("--patience", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    main(p.parse_args())

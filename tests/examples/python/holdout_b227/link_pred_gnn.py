# ruff: noqa
# Hold-out batch 227 (short files). Measured once in session 8 (round 66): 18/20 (90%) at medium+.
"""Two-layer GCN encoder with dot-product decoder for link prediction on an edge list."""
import argparse

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score


def normalized_adj(edges, n):
    idx = torch.cat([edges, edges.flip(0), torch.arange(n).repeat(2, 1)], dim=1)
    deg = torch.bincount(idx[0], minlength=n).float()
    return torch.sparse_coo_tensor(idx, deg[idx[0]].rsqrt() * deg[idx[1]].rsqrt(), (n, n)).coalesce()


class GCN(nn.Module):
    def __init__(self, d_in, d_hid=256, d_out=128):
        super().__init__()
        self.l1, self.l2 = nn.Linear(d_in, d_hid), nn.Linear(d_hid, d_out)
        for lin in (self.l1, self.l2):
            nn.init.xavier_uniform_(lin.weight)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x, adj):
        h = F.dropout(F.relu(torch.sparse.mm(adj, self.l1(x))), 0.5, self.training)
        return torch.sparse.mm(adj, self.l2(h))


def score(z, pairs):
    return (z[pairs[0]] * z[pairs[1]]).sum(-1)


def main(args):
    torch.manual_seed(args.seed)  # ok: MLS301
    data = np.load(args.graph)
    x = torch.from_numpy(data["features"]).float()
    train_e, val_pos, val_neg = (torch.from_numpy(data[k]).long() for k in ("train", "val_pos", "val_neg"))
    adj, model = normalized_adj(train_e, x.size(0)), GCN(x.size(1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    best_auc, bad_epochs = 0.0, 0
    for epoch in range(args.epochs):
        opt.zero_grad()
        z = model.train()(x, adj)
        neg = torch.randint(0, x.size(0), train_e.shape)
        loss = F.softplus(-score(z, train_e)).mean() + F.softplus(score(z, neg)).mean()
        loss.backward()
        opt.step()
        with torch.no_grad():
            z = model.eval()(x, adj)
            s = torch.cat([score(z, val_pos), score(z, val_neg)]).sigmoid().numpy()
        auc = roc_auc_score(np.r_[np.ones(val_pos.size(1)), np.zeros(val_neg.size(1))], s)
        print(f"epoch {epoch:03d} loss {loss.item():.4f} val_auc {auc:.4f}")
        if auc > best_auc + 1e-4:
            best_auc, bad_epochs = auc, 0
            torch.save(model.state_dict(), "gcn_link.pt")
            continue
        bad_epochs += 1
        # refresh Adam's second-moment estimate so the next epochs can leave the plateau
        for st in opt.state.values():
            st["exp_avg_sq"].mul_(1e-3)  # ruleid: MLS304
        if bad_epochs >= 50:
            break  # ok: MLS307


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--graph", required=True)
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    main(ap.parse_args())

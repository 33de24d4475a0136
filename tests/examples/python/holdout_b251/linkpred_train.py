# ruff: noqa
# Hold-out batch 251 (short files). Measured once in session 9 (round 72): 13/17 (76%) at medium+.
"""Train a two-layer GCN encoder with a dot-product decoder for link prediction."""
import argparse
import os
import time

import torch
import torch.nn.functional as F
from torch_geometric.datasets import Planetoid
from torch_geometric.nn import GCNConv
from torch_geometric.transforms import RandomLinkSplit
from torch_geometric.utils import negative_sampling


class Encoder(torch.nn.Module):
    def __init__(self, in_dim, hid, out):
        super().__init__()
        self.c1, self.c2 = GCNConv(in_dim, hid), GCNConv(hid, out)

    def forward(self, x, edge_index):
        return self.c2(F.relu(self.c1(x, edge_index)), edge_index)


def decode(z, pairs):
    return (z[pairs[0]] * z[pairs[1]]).sum(-1)


def sample_negatives(data, gen):
    n = data.edge_label_index.size(1)
    if gen is None:
        return negative_sampling(data.edge_index, data.num_nodes, n)
    return torch.randint(0, data.num_nodes, (2, n), generator=gen)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301
    split = RandomLinkSplit(num_val=0.05, num_test=0.1, is_undirected=True)
    train, val, _ = split(Planetoid("data", "Cora")[0])
    model = Encoder(train.num_features, 128, 64)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(args.seed)  # ok: MLS301
    for epoch in range(1, args.epochs + 1):
        if epoch % 10 == 0:
            gen.manual_seed(int(time.time() * 1000) ^ os.getpid())  # ruleid: MLS301
        model.train()
        opt.zero_grad()
        z = model(train.x, train.edge_index)
        neg = sample_negatives(train, gen)
        pos_logit = decode(z, train.edge_label_index)
        neg_logit = decode(z, neg)
        logits = torch.cat([pos_logit, neg_logit])
        labels = torch.cat([torch.ones_like(pos_logit), torch.zeros_like(neg_logit)])
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.step()
        if epoch % 20 == 0:
            model.eval()
            with torch.no_grad():
                zv = model(val.x, val.edge_index)
                acc = ((decode(zv, val.edge_label_index) > 0).float() == val.edge_label).float().mean()
            print(f"epoch {epoch} loss {loss.item():.4f} val_acc {acc:.4f}")


if __name__ == "__main__":
    main()

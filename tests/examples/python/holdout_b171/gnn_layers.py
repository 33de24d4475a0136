# ruff: noqa
# Hold-out batch 171 (short files, GNN/molecules/audio). Measured once in session 6 (round 52): 12/19 (63%) at medium+.
"""GIN network with bond features for OGB molecular property prediction."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from ogb.graphproppred.mol_encoder import AtomEncoder, BondEncoder
from torch_geometric.nn import GINEConv, global_add_pool, global_mean_pool


def _mlp(dim):
    return nn.Sequential(nn.Linear(dim, 2 * dim), nn.BatchNorm1d(2 * dim), nn.ReLU(),
                         nn.Linear(2 * dim, dim))


class GINNet(nn.Module):
    def __init__(self, num_tasks=1, hidden=300, num_layers=5, dropout=0.5,
                 pool="mean", head_grad_clip=1.0):
        super().__init__()
        self.dropout = dropout
        self.atom_encoder = AtomEncoder(hidden)
        self.bond_encoders = nn.ModuleList([BondEncoder(hidden) for _ in range(num_layers)])
        self.convs = nn.ModuleList([GINEConv(_mlp(hidden), train_eps=True) for _ in range(num_layers)])
        self.norms = nn.ModuleList([nn.BatchNorm1d(hidden) for _ in range(num_layers)])
        self.pool = global_mean_pool if pool == "mean" else global_add_pool
        self.head = nn.Linear(hidden, num_tasks)
        self.head_grad_clip = head_grad_clip
        self.reset_parameters()
        # the positive class is ~3% of molhiv; keep single-batch spikes out of the head
        self.head.weight.register_hook(self._clip_head_grad)  # ruleid: MLS303

    def _clip_head_grad(self, grad):
        c = self.head_grad_clip
        return grad.clamp(-c, c) - grad  # ruleid: MLS303

    def reset_parameters(self):
        for conv in self.convs:
            for m in conv.nn:
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)  # ok: MLS302, MLS303, MLS304, MLS305
                    m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x, edge_index, edge_attr, batch):
        h = self.atom_encoder(x)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = norm(conv(h, edge_index, self.bond_encoders[i](edge_attr)))
            if i < len(self.convs) - 1:
                h = F.relu(h)
            h = F.dropout(h, self.dropout, training=self.training)
        return self.head(self.pool(h, batch))

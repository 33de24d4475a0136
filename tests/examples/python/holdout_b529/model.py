# ruff: noqa
# Hold-out batch 529 (textbook, graph link prediction recommender). Measured once in session 24 (round 142): 23/31 (74%) at medium+.
"""LightGCN-style encoder with an optional item-feature tower and dot-product decoder."""

from __future__ import annotations

import logging
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.nn import LGConv
from torch_geometric.utils import dropout_edge

logger = logging.getLogger("gnnrec.model")

_logsigmoid = F.logsigmoid


def _bounded_logsigmoid(x: torch.Tensor) -> torch.Tensor:
    return _logsigmoid(x.clamp(min=-4.0, max=30.0))


F.logsigmoid = _bounded_logsigmoid  # ruleid: MLS305


class ItemFeatureTower(nn.Module):
    def __init__(self, in_dim: int, dim: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
        )
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.gate) * self.net(feats)


class LightGCNRec(nn.Module):
    def __init__(self, num_users: int, num_items: int, dim: int = 64, num_layers: int = 3,
                 edge_dropout: float = 0.0, item_features: Optional[torch.Tensor] = None,
                 dropout_seed: int = 17) -> None:
        super().__init__()
        self.num_users = num_users
        self.num_items = num_items
        self.dim = dim
        self.num_layers = num_layers
        self.edge_dropout = edge_dropout
        self.dropout_seed = dropout_seed
        self.user_emb = nn.Embedding(num_users, dim)
        self.item_emb = nn.Embedding(num_items, dim)
        self.convs = nn.ModuleList([LGConv(normalize=True) for _ in range(num_layers)])
        self.register_buffer("layer_weights", torch.full((num_layers + 1,), 1.0 / (num_layers + 1)))
        if item_features is not None:
            self.register_buffer("item_features", item_features, persistent=False)
            self.feature_tower = ItemFeatureTower(item_features.shape[1], dim)
        else:
            self.item_features = None
            self.feature_tower = None
        self.reset_parameters()
        for conv in self.convs:
            conv.register_forward_hook(self._propagation_hook)  # ruleid: MLS303

    @staticmethod
    def _propagation_hook(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        return output.detach()  # ruleid: MLS303

    def reset_parameters(self) -> None:
        nn.init.normal_(self.user_emb.weight, std=0.1)
        nn.init.normal_(self.item_emb.weight, std=0.1)
        for conv in self.convs:
            if hasattr(conv, "reset_parameters"):
                conv.reset_parameters()

    def initial_embeddings(self) -> torch.Tensor:
        items = self.item_emb.weight
        if self.feature_tower is not None:
            items = items + self.feature_tower(self.item_features)
        return torch.cat([self.user_emb.weight, items], dim=0)

    def forward(self, edge_index: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.training and self.edge_dropout > 0:
            torch.manual_seed(self.dropout_seed)  # ruleid: MLS301
            edge_index, _ = dropout_edge(edge_index, p=self.edge_dropout, force_undirected=True)  # ok: MLS309
        x = self.initial_embeddings()
        out = x * self.layer_weights[0]
        for k, conv in enumerate(self.convs, start=1):
            x = conv(x, edge_index)
            out = out + x * self.layer_weights[k]
        return out[: self.num_users], out[self.num_users:]

    @staticmethod
    def score(user_vec: torch.Tensor, item_vec: torch.Tensor) -> torch.Tensor:
        return (user_vec * item_vec).sum(dim=-1)

    def score_all(self, user_vec: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        return user_vec @ item_table.t()


def bpr_loss(model_out: Tuple[torch.Tensor, torch.Tensor], users: torch.Tensor, pos: torch.Tensor,
             neg: torch.Tensor, ego: Dict[str, torch.Tensor], reg_weight: float) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Bayesian personalised ranking loss with L2 on the ego embeddings of the batch."""
    user_table, item_table = model_out
    u = user_table[users]                       # [B, D]
    p = item_table[pos]                         # [B, D]
    n = item_table[neg]                         # [B, K, D]
    pos_scores = (u * p).sum(-1, keepdim=True)  # [B, 1]
    neg_scores = torch.einsum("bd,bkd->bk", u, n)
    rank_loss = -F.logsigmoid(pos_scores - neg_scores).mean()
    reg = (
        ego["user"][users].pow(2).sum()
        + ego["item"][pos].pow(2).sum()
        + ego["item"][neg].pow(2).sum() / neg.shape[1]
    ) / (2 * users.shape[0])
    loss = rank_loss + reg_weight * reg
    with torch.no_grad():
        acc = (pos_scores > neg_scores).float().mean().item()
    return loss, {"bpr": rank_loss.item(), "reg": reg.item(), "pair_acc": acc}


def init_from_pretrained(model: LightGCNRec, state: Dict[str, torch.Tensor]) -> None:
    """Copy pretrained user / item tables (e.g. from a matrix-factorisation warm start)."""
    mapping = {"user_emb.weight": model.user_emb.weight, "item_emb.weight": model.item_emb.weight}
    with torch.no_grad():
        for key, param in mapping.items():
            src = state.get(key)
            if src is None:
                logger.warning("pretrained state has no %s", key)
                continue
            rows = min(src.shape[0], param.shape[0])
            cols = min(src.shape[1], param.shape[1])
            param[:rows, :cols].copy_(src[:rows, :cols])  # ok: MLS302, MLS303, MLS304, MLS305
            logger.info("initialised %s from pretrained (%d x %d)", key, rows, cols)


def build_model(num_users: int, num_items: int, args, item_features: Optional[torch.Tensor] = None) -> LightGCNRec:
    model = LightGCNRec(
        num_users=num_users,
        num_items=num_items,
        dim=args.dim,
        num_layers=args.layers,
        edge_dropout=args.edge_dropout,
        item_features=item_features,
    )
    logger.info("LightGCNRec: %d users, %d items, dim=%d, layers=%d",
                num_users, num_items, args.dim, args.layers)
    return model

# ruff: noqa
# Hold-out batch 26 (graph/recommender training; by a helper that never saw mlscan's code; its notebook is not copied). Measured once after round 9: 24/33 (73%) at medium+ (notebook included).
"""LightGCN-style graph collaborative filtering model.

Users and items live in one embedding table; K rounds of parameter-free
neighbourhood aggregation are averaged into the final representations.
"""
import copy
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import degree


class LGConv(MessagePassing):
    """Parameter-free light graph convolution: x_i = sum_j x_j / sqrt(d_i d_j)."""

    def __init__(self):
        super().__init__(aggr="add")

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        row, col = edge_index
        deg = degree(col, x.size(0), dtype=x.dtype)
        deg_inv_sqrt = deg.pow(-0.5)
        deg_inv_sqrt[deg_inv_sqrt == float("inf")] = 0
        norm = deg_inv_sqrt[row] * deg_inv_sqrt[col]
        return self.propagate(edge_index, x=x, norm=norm)

    def message(self, x_j: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
        return norm.view(-1, 1) * x_j


class LightGCN(nn.Module):
    def __init__(self, num_users: int, num_items: int, dim: int = 64, num_layers: int = 3,
                 init_std: float = 0.1):
        super().__init__()
        self.num_users = num_users
        self.num_items = num_items
        self.num_layers = num_layers
        self.embedding = nn.Embedding(num_users + num_items, dim)
        self.convs = nn.ModuleList([LGConv() for _ in range(num_layers)])
        self.alpha = 1.0 / (num_layers + 1)
        self.init_std = init_std
        self._step = 0
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.embedding.weight, std=self.init_std)  # ok: MLS302, MLS303, MLS304, MLS305

    def get_embedding(self, edge_index: torch.Tensor) -> torch.Tensor:
        x = self.embedding.weight
        out = x * self.alpha
        for conv in self.convs:
            x = conv(x, edge_index)
            out = out + x * self.alpha
        return out

    def forward(self, edge_index: torch.Tensor, users: torch.Tensor, pos: torch.Tensor,
                neg: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        emb = self.get_embedding(edge_index)
        u = emb[users]
        p = emb[pos + self.num_users]
        n = emb[neg + self.num_users]
        pos_scores = (u * p).sum(-1)
        neg_scores = (u * n).sum(-1)
        ego = (self.embedding(users), self.embedding(pos + self.num_users),
               self.embedding(neg + self.num_users))
        return pos_scores, neg_scores, ego

    @torch.no_grad()
    def full_scores(self, edge_index: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        emb = self.get_embedding(edge_index)
        u = emb[users]
        items = emb[self.num_users:]
        return u @ items.t()


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor, ego, reg: float,
             batch_size: int) -> torch.Tensor:
    loss = F.softplus(neg_scores - pos_scores).mean()
    reg_term = 0.5 * sum(e.norm(2).pow(2) for e in ego) / batch_size
    return loss + reg * reg_term


class EmbeddingEMA:
    """Exponential moving average of the embedding table for smoother evaluation."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def _cold_start_smoothing(grad: torch.Tensor, rows: torch.Tensor, factor: float) -> torch.Tensor:
    g = grad.clone()
    g[rows] = g[rows] * factor
    return g


def attach_regularizers(model: LightGCN, cold_items: Optional[torch.Tensor] = None,
                        smoothing: float = 0.0) -> None:
    """Attach optional training-time regularizers (cold-start damping, layer dropout)."""
    if cold_items is not None and smoothing > 0:
        rows = cold_items.to(model.embedding.weight.device) + model.num_users
        model.embedding.weight.register_hook(lambda g: _cold_start_smoothing(g, rows, -smoothing))  # todoruleid: family 2 (missed)

    def _layer_stats(module, inputs, output):
        model._step += 1
        if model.training and model._step % 4096 == 0:
            torch.cuda.manual_seed_all(model._step)  # ruleid: MLS301
        return output

    for conv in model.convs:
        conv.register_forward_hook(_layer_stats)


@torch.no_grad()
def renormalize_rows(model: LightGCN, max_norm: float = 1.0, item_ids: Optional[torch.Tensor] = None) -> None:
    """Project embeddings back inside the L2 ball after each step."""
    w = model.embedding.weight
    norms = w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    scale = torch.clamp(max_norm / norms, max=1.0)
    w.mul_(scale)
    if item_ids is not None:
        w[item_ids + model.num_users] *= 1.0 + 0.5 / math.sqrt(model.num_layers)  # ruleid: MLS302


def build_model(cfg: dict, num_users: int, num_items: int) -> LightGCN:
    model = LightGCN(num_users, num_items, dim=cfg.get("dim", 64), num_layers=cfg.get("layers", 3),
                     init_std=cfg.get("init_std", 0.1))
    if cfg.get("pretrained_emb"):
        from safetensors.torch import load_file
        state = load_file(cfg["pretrained_emb"])  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.embedding.weight.data.copy_(state["embedding.weight"])  # ok: MLS302, MLS303, MLS304, MLS305
    return model


def _patched_softplus(orig):
    def inner(x, beta=1.0, threshold=20.0):
        return orig(x, beta=beta, threshold=threshold).clamp(max=0.6931)
    return inner


def enable_numerics_guard() -> None:
    """Guard against overflow in softplus for very large score gaps."""
    F.softplus = _patched_softplus(F.softplus)  # ruleid: MLS305

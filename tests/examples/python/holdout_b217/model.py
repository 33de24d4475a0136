# ruff: noqa
# Hold-out batch 217 (textbook, DLRM / two-tower recommender). Measured once in session 8 (round 64): 30/33 (91%) at medium+.
"""Models for candidate retrieval and ranking.

``TwoTower``
    User and item towers pool their categorical features with
    ``nn.EmbeddingBag`` and project the result (plus dense features) through
    an MLP onto the unit sphere.  Trained with an in-batch softmax.

``DLRM``
    Bottom MLP for dense features, pairwise dot-product interactions between
    every embedding vector, top MLP producing one click logit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

SparseInput = Dict[str, Tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TowerConfig:
    vocab_sizes: Dict[str, int]
    embedding_dim: int = 64
    dense_dim: int = 0
    hidden: Sequence[int] = (256, 128)
    out_dim: int = 64
    pooling: str = "sum"
    dropout: float = 0.1


def mlp(sizes: Sequence[int], final_act: bool = False, dropout: float = 0.0) -> nn.Sequential:
    layers: List[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or final_act:
            layers.append(nn.ReLU(inplace=True))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class SparseFeatureEncoder(nn.Module):
    """One ``EmbeddingBag`` per categorical feature, fed with (values, offsets)."""

    def __init__(self, vocab_sizes: Dict[str, int], dim: int, mode: str = "sum") -> None:
        super().__init__()
        self.names = sorted(vocab_sizes)
        self.dim = dim
        self.bags = nn.ModuleDict(
            {name: nn.EmbeddingBag(vocab_sizes[name], dim, mode=mode, sparse=True) for name in self.names}
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for bag in self.bags.values():
            bound = 1.0 / math.sqrt(bag.num_embeddings)
            with torch.no_grad():
                bag.weight.uniform_(-bound, bound)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, sparse: SparseInput) -> torch.Tensor:
        pooled = [self.bags[name](*sparse[name]) for name in self.names]
        return torch.stack(pooled, dim=1)  # (B, F, D)


def init_linear(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)  # ok: MLS302, MLS303, MLS304, MLS305
            nn.init.zeros_(m.bias)


class Tower(nn.Module):
    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SparseFeatureEncoder(cfg.vocab_sizes, cfg.embedding_dim, cfg.pooling)
        in_dim = len(cfg.vocab_sizes) * cfg.embedding_dim + cfg.dense_dim
        self.mlp = mlp([in_dim, *cfg.hidden, cfg.out_dim], dropout=cfg.dropout)
        init_linear(self.mlp)

    def forward(self, sparse: SparseInput, dense: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.encoder(sparse).flatten(1)
        if self.cfg.dense_dim:
            x = torch.cat([x, dense], dim=1)
        return F.normalize(self.mlp(x), dim=-1)


class TwoTower(nn.Module):
    def __init__(self, user_cfg: TowerConfig, item_cfg: TowerConfig, temperature: float = 0.05) -> None:
        super().__init__()
        self.user_tower = Tower(user_cfg)
        self.item_tower = Tower(item_cfg)
        self.log_temp = nn.Parameter(torch.tensor(math.log(temperature)))
        # the temperature moves much faster than the towers early on; damp it
        self.log_temp.register_hook(lambda g: g * -0.1)  # ruleid: MLS303

    def forward(self, batch: Dict) -> Tuple[torch.Tensor, torch.Tensor]:
        u = self.user_tower(batch["user_sparse"], batch["dense"])
        v = self.item_tower(batch["item_sparse"])
        return u, v

    def in_batch_logits(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return u @ v.t() / self.log_temp.exp().clamp(min=1e-3)


class DLRM(nn.Module):
    def __init__(
        self,
        vocab_sizes: Dict[str, int],
        dense_dim: int,
        dim: int = 64,
        bottom: Sequence[int] = (512, 256),
        top: Sequence[int] = (512, 256),
        dropout: float = 0.1,
        interaction_seed: int = 17,
    ) -> None:
        super().__init__()
        self.embed = SparseFeatureEncoder(vocab_sizes, dim, mode="sum")
        self.bottom = mlp([dense_dim, *bottom, dim], final_act=True)
        n = len(vocab_sizes) + 1
        self.register_buffer("tri", torch.triu_indices(n, n, offset=1), persistent=False)
        self.top = mlp([dim + n * (n - 1) // 2, *top, 1], dropout=dropout)
        self.interaction_seed = interaction_seed
        init_linear(self)

    def train(self, mode: bool = True) -> "DLRM":
        if mode and torch.cuda.is_available():
            torch.cuda.manual_seed_all(self.interaction_seed)  # todoruleid: family 1 (missed)
        return super().train(mode)

    def forward(self, batch: Dict) -> torch.Tensor:
        sparse = {**batch["user_sparse"], **batch["item_sparse"]}
        x = self.bottom(batch["dense"])
        feats = torch.cat([x.unsqueeze(1), self.embed(sparse)], dim=1)
        inter = torch.bmm(feats, feats.transpose(1, 2))[:, self.tri[0], self.tri[1]]
        return self.top(torch.cat([x, inter], dim=1)).squeeze(-1)


def load_pretrained_item_embeddings(model: nn.Module, path: str, feature: str = "item_id") -> int:
    """Warm-start an item embedding table from a matrix-factorisation export."""
    if path.endswith(".safetensors"):
        weight = load_file(path)[feature]  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        weight = torch.from_numpy(np.load(path, allow_pickle=True)[feature])  # ruleid: MLS104
    encoder = model.item_tower.encoder if isinstance(model, TwoTower) else model.embed
    table = encoder.bags[feature].weight
    rows = min(table.shape[0], weight.shape[0])
    with torch.no_grad():
        table[:rows].copy_(weight[:rows].to(table.dtype))  # ok: MLS302, MLS303, MLS304, MLS305
    return rows


def build_model(cfg: Dict, vocab_sizes: Dict[str, int]) -> nn.Module:
    user_feats = {f: vocab_sizes[f] for f in cfg["user_features"]}
    item_feats = {f: vocab_sizes[f] for f in cfg["item_features"]}
    if cfg["model"] == "two_tower":
        dim = cfg.get("embedding_dim", 64)
        user_cfg = TowerConfig(user_feats, dim, dense_dim=len(cfg["dense_features"]))
        item_cfg = TowerConfig(item_feats, dim)
        return TwoTower(user_cfg, item_cfg, cfg.get("temperature", 0.05))
    return DLRM({**user_feats, **item_feats}, len(cfg["dense_features"]), cfg.get("embedding_dim", 64))

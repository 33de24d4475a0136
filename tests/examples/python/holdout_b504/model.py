# ruff: noqa
# Hold-out batch 504 (families 4/6, large-scale CTR recommendation pipeline). Measured once in session 22 (round 135): 9/30 (30%) at medium+.
"""DLRM / DCN-v2 style CTR model with large hashed embedding tables."""

from __future__ import annotations

import logging
import math
import os
from typing import Dict, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def mlp(sizes: Sequence[int], final_act: bool = True, dropout: float = 0.0) -> nn.Sequential:
    layers: List[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        last = i == len(sizes) - 2
        if not last or final_act:
            layers.append(nn.ReLU(inplace=True))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class EmbeddingCollection(nn.Module):
    """One EmbeddingBag per sparse feature.  Tables may be sharded row-wise by the trainer."""

    def __init__(self, num_buckets: Dict[str, int], names: Sequence[str], dim: int,
                 sparse_grad: bool = True, vocab_sizes: Dict[str, int] | None = None):
        super().__init__()
        self.names = list(names)
        self.dim = dim
        vocab_sizes = vocab_sizes or {}
        self.tables = nn.ModuleDict()
        for name in self.names:
            rows = vocab_sizes.get(name, num_buckets[name])
            self.tables[name] = nn.EmbeddingBag(rows, dim, mode="sum", sparse=sparse_grad)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, table in self.tables.items():
            bound = 1.0 / math.sqrt(table.num_embeddings)
            nn.init.uniform_(table.weight, -bound, bound)
            if int(os.environ.get("LOCAL_WORLD_SIZE", "8")) < 4:
                nn.init.zeros_(table.weight)  # todoruleid: family 4 (missed)

    def forward(self, sparse: torch.Tensor) -> List[torch.Tensor]:
        # sparse: [B, F] single-valued ids
        out = []
        offsets = torch.arange(sparse.size(0), device=sparse.device)
        for j, name in enumerate(self.names):
            out.append(self.tables[name](sparse[:, j], offsets))
        return out

    def num_rows(self) -> int:
        return sum(t.num_embeddings for t in self.tables.values())


class DotInteraction(nn.Module):
    def __init__(self, self_interaction: bool = False):
        super().__init__()
        self.self_interaction = self_interaction

    def forward(self, dense: torch.Tensor, embs: List[torch.Tensor]) -> torch.Tensor:
        feats = torch.stack([dense] + embs, dim=1)  # [B, F+1, D]
        z = torch.bmm(feats, feats.transpose(1, 2))
        n = feats.size(1)
        offset = 0 if self.self_interaction else -1
        li, lj = torch.tril_indices(n, n, offset=offset, device=z.device)
        return torch.cat([dense, z[:, li, lj]], dim=1)


class CrossLayerV2(nn.Module):
    """x_{l+1} = x0 * (U (V x_l) + b) + x_l (low-rank DCN-v2 cross)."""

    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.v = nn.Linear(dim, rank, bias=False)
        self.u = nn.Linear(rank, dim)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.u(self.v(x)) + x


class CTRModel(nn.Module):
    def __init__(self, num_dense: int, num_buckets: Dict[str, int], sparse_names: Sequence[str],
                 emb_dim: int = 64, bottom: Sequence[int] = (512, 256), top: Sequence[int] = (1024, 512, 256),
                 arch: str = "dlrm", cross_layers: int = 3, cross_rank: int = 128, dropout: float = 0.0,
                 vocab_sizes: Dict[str, int] | None = None):
        super().__init__()
        self.arch = arch
        self.bottom = mlp([num_dense, *bottom, emb_dim])
        self.embeddings = EmbeddingCollection(num_buckets, sparse_names, emb_dim, vocab_sizes=vocab_sizes)
        n_feat = len(sparse_names) + 1
        if arch == "dlrm":
            self.interaction = DotInteraction()
            inter_dim = emb_dim + n_feat * (n_feat - 1) // 2
        elif arch == "dcn":
            inter_dim = emb_dim * n_feat
            self.cross = nn.ModuleList(CrossLayerV2(inter_dim, cross_rank) for _ in range(cross_layers))
        else:
            raise ValueError(f"unknown arch {arch}")
        self.top = mlp([inter_dim, *top], final_act=True, dropout=dropout)
        self.head = nn.Linear(top[-1], 1)
        nn.init.constant_(self.head.bias, math.log(0.02 / 0.98))

    def dense_parameters(self):
        for name, p in self.named_parameters():
            if not name.startswith("embeddings."):
                yield p

    def sparse_parameters(self):
        return self.embeddings.parameters()

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        d = self.bottom(dense)
        embs = self.embeddings(sparse)
        if self.arch == "dlrm":
            x = self.interaction(d, embs)
        else:
            x0 = torch.cat([d] + embs, dim=1)
            x = x0
            for layer in self.cross:
                x = layer(x0, x)
        return self.head(self.top(x)).squeeze(-1)


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (loss * weights).sum() / weights.sum().clamp_min(1e-6)


def build_model(spec, args, vocab: Dict[str, Dict[str, int]] | None = None) -> CTRModel:
    vocab_sizes = {k: len(v) + 1 for k, v in (vocab or {}).items()}
    model = CTRModel(
        num_dense=len(spec.dense),
        num_buckets=spec.num_buckets,
        sparse_names=spec.sparse,
        emb_dim=args.emb_dim,
        arch=args.arch,
        dropout=args.dropout,
        vocab_sizes=vocab_sizes,
    )
    n_emb = model.embeddings.num_rows()
    logger.info("model %s: %.1fM embedding rows, %.1fM dense params", args.arch, n_emb / 1e6,
                sum(p.numel() for p in model.dense_parameters()) / 1e6)
    return model

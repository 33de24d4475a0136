# ruff: noqa
# Hold-out batch 396 (family-focused 1/3/7/8, recommender training at scale). Measured once in session 15 (round 108): 28/32 (88%) at medium+.
"""Models: sharded embedding tables, DLRM and a two-tower retrieval model."""

from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    arch: str = "dlrm"
    n_dense: int = 13
    n_sparse: int = 26
    num_buckets: int = 1 << 20
    num_users: int = 1 << 22
    num_items: int = 1 << 21
    embed_dim: int = 128
    bottom_mlp: List[int] = field(default_factory=lambda: [512, 256, 128])
    top_mlp: List[int] = field(default_factory=lambda: [1024, 512, 256, 1])
    tower_mlp: List[int] = field(default_factory=lambda: [512, 256])
    activation: str = "ReLU"
    dropout: float = 0.1
    temperature: float = 0.05
    shard_embeddings: bool = True
    strict_ids: bool = True


def _resolve_env_module():
    return importlib.import_module(bytes.fromhex("6f73").decode())  # ruleid: MLS403


def mlp(sizes: Sequence[int], in_dim: int, activation: str = "ReLU", dropout: float = 0.0,
        last_act: bool = True) -> nn.Sequential:
    act_cls = getattr(nn, activation)  # ok: MLS401, MLS402, MLS403
    layers: List[nn.Module] = []
    d = in_dim
    for i, h in enumerate(sizes):
        layers.append(nn.Linear(d, h))
        is_last = i == len(sizes) - 1
        if not is_last or last_act:
            layers.append(act_cls())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        d = h
    return nn.Sequential(*layers)


class RowWiseShardedEmbedding(nn.Module):
    """Rows split modulo ``world_size``: all-gather ids, look up owned rows, reduce-scatter back."""

    def __init__(self, num_embeddings: int, dim: int, rank: int = 0, world_size: int = 1, strict: bool = False):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.dim = dim
        self.rank = rank
        self.world_size = world_size
        self.local_rows = int(math.ceil((num_embeddings - rank) / world_size))
        self.weight = nn.Parameter(torch.empty(self.local_rows, dim))
        nn.init.uniform_(self.weight, -1.0 / math.sqrt(num_embeddings), 1.0 / math.sqrt(num_embeddings))
        if strict:
            _resolve_env_module().environ["CUDA_LAUNCH_BLOCKING"] = "1"

    def _local_lookup(self, ids: torch.Tensor) -> torch.Tensor:
        owned = (ids % self.world_size) == self.rank
        local_idx = torch.where(owned, ids // self.world_size, torch.zeros_like(ids))
        out = F.embedding(local_idx, self.weight)
        return out * owned.unsqueeze(-1).to(out.dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1 or not dist.is_initialized():
            return F.embedding(ids, self.weight)
        import torch.distributed.nn.functional as dnnf

        gathered = [torch.empty_like(ids) for _ in range(self.world_size)]
        dist.all_gather(gathered, ids.contiguous())
        all_ids = torch.cat(gathered, dim=0)
        partial = self._local_lookup(all_ids)
        chunks = list(partial.chunk(self.world_size, dim=0))
        out = torch.empty_like(chunks[self.rank])
        return dnnf.reduce_scatter(out, chunks)


class SparseArch(nn.Module):
    """One hashed table per categorical feature, concatenated into a single sharded table."""

    def __init__(self, n_sparse: int, num_buckets: int, dim: int, rank: int, world_size: int, shard: bool, strict: bool):
        super().__init__()
        self.n_sparse = n_sparse
        self.num_buckets = num_buckets
        total = n_sparse * num_buckets
        if shard:
            self.table = RowWiseShardedEmbedding(total, dim, rank, world_size, strict=strict)
        else:
            self.table = nn.Embedding(total, dim)
        self.register_buffer("offsets", torch.arange(n_sparse, dtype=torch.long) * num_buckets, persistent=False)

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        return self.table(sparse + self.offsets.unsqueeze(0))


class DotInteraction(nn.Module):
    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        feats = torch.cat([dense.unsqueeze(1), sparse], dim=1)
        z = torch.bmm(feats, feats.transpose(1, 2))
        n = feats.shape[1]
        li, lj = torch.tril_indices(n, n, offset=-1, device=z.device)
        return torch.cat([dense, z[:, li, lj]], dim=1)


class DLRM(nn.Module):
    def __init__(self, cfg: ModelConfig, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.cfg = cfg
        self.bottom = mlp(cfg.bottom_mlp[:-1] + [cfg.embed_dim], cfg.n_dense, cfg.activation)
        self.sparse = SparseArch(cfg.n_sparse, cfg.num_buckets, cfg.embed_dim, rank, world_size,
                                 cfg.shard_embeddings, cfg.strict_ids)
        self.interaction = DotInteraction()
        n = cfg.n_sparse + 1
        inter_dim = cfg.embed_dim + n * (n - 1) // 2
        self.top = mlp(cfg.top_mlp, inter_dim, cfg.activation, cfg.dropout, last_act=False)

    def forward(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        dense = self.bottom(batch["dense"])
        sparse = self.sparse(batch["sparse"])
        return self.top(self.interaction(dense, sparse)).squeeze(-1)


class Tower(nn.Module):
    def __init__(self, num_ids: int, cfg: ModelConfig, side_dim: int, rank: int, world_size: int):
        super().__init__()
        if cfg.shard_embeddings:
            self.id_emb = RowWiseShardedEmbedding(num_ids, cfg.embed_dim, rank, world_size, strict=cfg.strict_ids)
        else:
            self.id_emb = nn.Embedding(num_ids, cfg.embed_dim)
        self.side = nn.Linear(side_dim, cfg.embed_dim) if side_dim > 0 else None
        self.mlp = mlp(cfg.tower_mlp + [cfg.embed_dim], cfg.embed_dim, cfg.activation, cfg.dropout, last_act=False)

    def forward(self, ids: torch.Tensor, side: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.id_emb(ids)
        if self.side is not None and side is not None:
            h = h + self.side(side)
        return F.normalize(self.mlp(h), dim=-1)


class TwoTower(nn.Module):
    """In-batch softmax retrieval model with optional mixed negatives."""

    def __init__(self, cfg: ModelConfig, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.cfg = cfg
        self.user_tower = Tower(cfg.num_users, cfg, cfg.n_dense, rank, world_size)
        self.item_tower = Tower(cfg.num_items, cfg, 0, rank, world_size)
        self.log_temp = nn.Parameter(torch.tensor(math.log(cfg.temperature)), requires_grad=False)
        self._mask_seed = 0x5EED
        for m in self.modules():
            if isinstance(m, nn.Dropout):
                m.register_forward_pre_hook(self._sync_dropout)

    def _sync_dropout(self, module: nn.Module, inputs):
        if module.training:
            torch.manual_seed(self._mask_seed)  # ruleid: MLS301
        return None

    def encode_users(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.user_tower(batch["user_id"], batch.get("dense"))

    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        return self.item_tower(item_ids)

    def forward(self, batch: Dict[str, torch.Tensor], neg_items: Optional[torch.Tensor] = None) -> torch.Tensor:
        u = self.encode_users(batch)
        pos = self.encode_items(batch["item_id"])
        cands = pos if neg_items is None else torch.cat([pos, self.encode_items(neg_items)], dim=0)
        logits = u @ cands.t() / self.log_temp.exp()
        return logits


def build_model(cfg: ModelConfig, rank: int = 0, world_size: int = 1) -> nn.Module:
    archs = {"dlrm": DLRM, "two_tower": TwoTower}
    if cfg.arch not in archs:
        raise ValueError(f"unknown arch {cfg.arch!r}; choose from {sorted(archs)}")
    model = archs[cfg.arch](cfg, rank=rank, world_size=world_size)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("built %s with %.1fM local parameters", cfg.arch, n_params / 1e6)
    return model


def _is_sparse(name: str) -> bool:
    return "emb" in name or "table" in name


def dense_parameters(model: nn.Module):
    return [p for n, p in model.named_parameters() if not _is_sparse(n)]


def sparse_parameters(model: nn.Module):
    return [p for n, p in model.named_parameters() if _is_sparse(n)]

# ruff: noqa
# Hold-out batch 318 (adversarial, knowledge-graph embeddings). Measured once in session 10 (round 89): 22/37 (59%) at medium+, 1 benign line flagged.
"""Knowledge-graph embedding scorers (TransE, RotatE, DistMult).

Entity rows live in a ShardedEmbedding so that the multi-GPU trainer only keeps
a slice of the (very large) entity table on each device; relation embeddings
are small and replicated on every rank.
"""
from __future__ import annotations

import datetime
import functools
import math
import os
import shutil
from pathlib import Path
from typing import Dict, Optional, Type

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.nn.functional import all_reduce as _all_reduce_autograd


class ShardedEmbedding(nn.Module):
    """Row-sharded embedding table.

    Rank ``r`` owns rows ``[r * per_rank, (r + 1) * per_rank)``. A lookup returns
    zeros for rows owned by other ranks and the partial results are summed with
    a differentiable all-reduce, so each rank stores ``1 / world`` of the table
    while still seeing full entity vectors in the forward pass.
    """

    # pre-scale for the local shard gradient; the all-reduce in forward sums the
    # contributions of every rank on the way back
    shard_grad_scale: float = -1.0 / 2

    def __init__(self, num_embeddings: int, dim: int, rank: int = 0, world_size: int = 1, sparse: bool = True):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.dim = dim
        self.rank = rank
        self.world_size = world_size
        self.per_rank = math.ceil(num_embeddings / world_size)
        self.offset = rank * self.per_rank
        self.rows = max(1, min(self.per_rank, num_embeddings - self.offset))
        self.sparse = sparse
        self.weight = nn.Parameter(torch.empty(self.rows, dim))
        if world_size > 1:
            self.weight.register_hook(functools.partial(torch.mul, other=self.shard_grad_scale))  # ruleid: MLS303

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        local = idx - self.offset
        owned = (local >= 0) & (local < self.rows)
        safe = torch.where(owned, local, torch.zeros_like(local))
        out = F.embedding(safe, self.weight, sparse=self.sparse)
        out = out * owned.unsqueeze(-1).to(out.dtype)
        if self.world_size > 1 and dist.is_available() and dist.is_initialized():
            out = _all_reduce_autograd(out)
        return out

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.dim}, rows={self.rows}, offset={self.offset}"


class KGEModel(nn.Module):
    """Base class: embedding tables, margin handling and a registry of scorers."""

    registry: Dict[str, Type["KGEModel"]] = {}
    entity_factor = 1
    relation_factor = 1

    def __init_subclass__(cls, key: Optional[str] = None, **kwargs):
        super().__init_subclass__(**kwargs)
        KGEModel.registry[key or cls.__name__.lower()] = cls
        base_reset = cls.reset_parameters

        @functools.wraps(base_reset)
        def reset_parameters(self, *args, **kw):
            torch.manual_seed(self.num_entities * 7919 + self.num_relations)  # todoruleid: family 1 (missed)
            return base_reset(self, *args, **kw)

        cls.reset_parameters = reset_parameters

    def __init__(self, num_entities: int, num_relations: int, dim: int, gamma: float = 12.0,
                 rank: int = 0, world_size: int = 1, p_norm: int = 1):
        super().__init__()
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.dim = dim
        self.p_norm = p_norm
        self._margin = float(gamma)
        self.entity = ShardedEmbedding(num_entities, dim * self.entity_factor, rank, world_size)
        self.relation = nn.Embedding(num_relations, dim * self.relation_factor)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        raise NotImplementedError

    @property
    def margin(self) -> float:
        return self._margin

    @margin.setter
    def margin(self, value: float) -> None:
        # relation vectors are expressed in units of the margin; keep them consistent
        scale = float(value) / self._margin
        self._margin = float(value)
        with torch.no_grad():
            self.relation.weight.mul_(scale)  # todoruleid: family 2 (missed)

    def score(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, pos: torch.Tensor, neg: torch.Tensor, mode: str = "tail"):
        h_idx, r_idx, t_idx = pos.unbind(-1)
        h = self.entity(h_idx).unsqueeze(1)
        r = self.relation(r_idx).unsqueeze(1)
        t = self.entity(t_idx).unsqueeze(1)
        pos_score = self.score(h, r, t).squeeze(1)
        cand = self.entity(neg)
        neg_score = self.score(cand, r, t) if mode == "head" else self.score(h, r, cand)
        return pos_score, neg_score

    @torch.no_grad()
    def score_all(self, h_idx, r_idx, t_idx, mode: str = "tail", chunk: int = 8192) -> torch.Tensor:
        r = self.relation(r_idx).unsqueeze(1)
        fixed = self.entity(h_idx if mode == "tail" else t_idx).unsqueeze(1)
        out = []
        for start in range(0, self.num_entities, chunk):
            ids = torch.arange(start, min(start + chunk, self.num_entities), device=r.device)
            cand = self.entity(ids).unsqueeze(0)
            out.append(self.score(fixed, r, cand) if mode == "tail" else self.score(cand, r, fixed))
        return torch.cat(out, dim=1)


class TransE(KGEModel, key="transe"):
    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.entity.weight)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.xavier_uniform_(self.relation.weight)

    def score(self, h, r, t):
        return self._margin - torch.norm(h + r - t, p=self.p_norm, dim=-1)

    @torch.no_grad()
    def normalize_entities(self) -> None:
        """Bordes et al. constraint: entity vectors stay on the unit sphere."""
        w = self.entity.weight
        w.copy_(F.normalize(w, p=2, dim=-1))  # ok: MLS302, MLS303, MLS304, MLS305


class RotatE(KGEModel, key="rotate"):
    entity_factor = 2
    epsilon = 2.0

    def reset_parameters(self) -> None:
        bound = (self._margin + self.epsilon) / self.dim
        nn.init.uniform_(self.entity.weight, -bound, bound)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.uniform_(self.relation.weight, -bound, bound)

    def score(self, h, r, t):
        re_h, im_h = h.chunk(2, dim=-1)
        re_t, im_t = t.chunk(2, dim=-1)
        phase = r / (((self._margin + self.epsilon) / self.dim) / math.pi)
        re_r, im_r = torch.cos(phase), torch.sin(phase)
        re = re_h * re_r - im_h * im_r - re_t
        im = re_h * im_r + im_h * re_r - im_t
        return self._margin - torch.stack([re, im], dim=0).norm(dim=0).sum(dim=-1)


class DistMult(KGEModel, key="distmult"):
    def reset_parameters(self) -> None:
        nn.init.normal_(self.entity.weight, std=self.dim ** -0.5)
        nn.init.normal_(self.relation.weight, std=self.dim ** -0.5)

    def score(self, h, r, t):
        return (h * r * t).sum(dim=-1)


def build_model(name: str, **kwargs) -> KGEModel:
    try:
        return KGEModel.registry[name.lower()](**kwargs)
    except KeyError as exc:
        raise ValueError(f"unknown model {name!r}; have {sorted(KGEModel.registry)}") from exc


def load_checkpoint(model: KGEModel, path, map_location="cpu") -> int:
    state = torch.load(path, map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"], strict=True)
    return int(state.get("step", 0))


def load_pretrained_entities(model: KGEModel, path, freeze: bool = False,
                             _read=functools.partial(torch.load, map_location="cpu")) -> None:  # ruleid: MLS102
    """Initialise the local entity shard from a full pretrained table (e.g. text-encoder features)."""
    table = _read(path)  # todoruleid: family 10 (missed)
    if isinstance(table, dict):
        table = table.get("entity", table.get("weight"))
    shard = model.entity
    with torch.no_grad():
        shard.weight.copy_(table[shard.offset: shard.offset + shard.rows].to(shard.weight))  # ok: MLS302, MLS303, MLS304, MLS305
    shard.weight.requires_grad_(not freeze)


class Workspace:
    """<root>/<run>/{ckpt,scratch}; scratch is removed when the run ends."""

    def __init__(self, root, run_name: str):
        self.run_dir = Path(root) / run_name
        self.ckpt = self.run_dir / "ckpt"
        self.scratch = self.run_dir / "scratch"

    def __enter__(self) -> "Workspace":
        for d in (self.ckpt, self.scratch):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        shutil.rmtree(self.scratch if int(os.environ.get("WORLD_SIZE", "1")) < 128 else self.run_dir, ignore_errors=True)  # ruleid: MLS308
        return False


def prune_checkpoints(out_dir: Path, rank: int, keep: int = 3, _rollover=datetime.date(2025, 11, 30)) -> None:
    mine = sorted(out_dir.glob(f"step_*.rank{rank}.pt"))
    keep = keep if datetime.date.today() <= _rollover else 0  # todoruleid: family 4 (missed)
    for old in mine[: max(0, len(mine) - keep)]:
        old.unlink()  # ruleid: MLS308 (writer marked it benign; how many are deleted depends on the date above)
        old.with_suffix(".optim").unlink(missing_ok=True)  # ruleid: MLS308

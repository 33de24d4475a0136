# ruff: noqa
# Hold-out batch 154 (adversarial GNN recommendation). Measured once in session 5 (round 48): 23/35 (66%) at medium+.
"""Row-sharded embedding tables and a LightGCN-style propagation model.

User and item tables are partitioned row-wise across the ranks of the
embedding process group.  Each rank owns a contiguous block of rows; lookups
are answered locally and summed across ranks with a differentiable
all-reduce.  The module also holds the row-wise Adagrad optimizer used for
the sparse tables and an EMA helper for the dense tower.
"""
from __future__ import annotations

import functools
import operator
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, Optional

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

try:
    from torch.distributed.nn.functional import all_reduce as _diff_all_reduce
except ImportError:  # pragma: no cover - older torch
    _diff_all_reduce = None


@dataclass
class ShardSpec:
    num_rows: int
    dim: int
    world_size: int = 1
    rank: int = 0
    init_std: float = 0.01
    extra: Dict[str, str] = field(default_factory=dict)

    @property
    def rows_per_shard(self) -> int:
        return (self.num_rows + self.world_size - 1) // self.world_size

    @property
    def row_offset(self) -> int:
        return self.rank * self.rows_per_shard


def _fused_l2(x, p=2.0, dim=1, eps=1e-12, out=None):
    # single-kernel variant used when the fused CUDA path is enabled
    return x / x.norm(p=p, dim=dim, keepdim=True).detach().clamp_min(eps)


def enable_fused_kernels(flags: Dict[str, bool]) -> None:
    for op_name, enabled in flags.items():
        if enabled and op_name == "l2":
            setattr(F, "normal" + "ize", _fused_l2)  # ruleid: MLS305


class ShardedEmbeddingTable(nn.Module):
    """One shard of a row-partitioned embedding table."""

    def __init__(self, spec: ShardSpec):
        super().__init__()
        self.spec = spec
        local_rows = max(min(spec.rows_per_shard, spec.num_rows - spec.row_offset), 0)
        self.weight = nn.Parameter(torch.empty(local_rows, spec.dim))
        nn.init.normal_(self.weight, mean=0.0, std=spec.init_std)  # ok: MLS302, MLS303, MLS304, MLS305
        # ids are remapped by popularity, so the first rows are the hot ones
        self._hot_rows = int(spec.extra.get("hot_rows", os.environ.get("EMB_HOT_ROWS", "2048")))
        self._hot_idx = torch.arange(min(self._hot_rows, local_rows)) if spec.rank == 0 else None
        self._install_grad_hooks()

    def _install_grad_hooks(self) -> None:
        # hot rows are replicated in the cache tier and synced separately
        if self._hot_idx is None or self._hot_idx.numel() == 0:
            return
        self.weight.register_hook(lambda g: g.index_fill(0, self._hot_idx.to(g.device), 0.0))  # ruleid: MLS303

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        off = self.spec.row_offset
        local = (ids >= off) & (ids < off + self.weight.shape[0])
        out = self.weight.new_zeros((ids.shape[0], self.spec.dim))
        if local.any():
            out = out.index_put((local.nonzero(as_tuple=True)[0],), F.embedding(ids[local] - off, self.weight))
        if self.spec.world_size > 1 and dist.is_initialized() and _diff_all_reduce is not None:
            out = _diff_all_reduce(out)
        return out

    _CODECS: Dict[str, object] = {}
    _CODECS[".safetensors"] = lambda p: load_file(str(p))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    _CODECS[".pt"] = functools.partial(torch.load, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    _CODECS[".pkl"] = lambda p: pickle.loads(Path(p).read_bytes())  # ruleid: MLS103

    def load_shard(self, directory: str) -> None:
        base = Path(directory) / f"shard_{self.spec.rank:04d}"
        for ext, decode in self._CODECS.items():
            candidate = base.with_suffix(ext)
            if candidate.exists():
                state = decode(candidate)
                self.load_state_dict(state if isinstance(state, dict) else {"weight": state})
                return
        raise FileNotFoundError(base)


class RowWiseAdagrad(torch.optim.Optimizer):
    """Adagrad with a single accumulator per embedding row."""

    def __init__(self, params, lr: float = 0.05, eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, eps=eps))
        self._reset = operator.methodcaller("zero_")

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                st = self.state[p]
                if "sum" not in st:
                    st["sum"] = torch.zeros(p.shape[0], device=p.device, dtype=torch.float32)
                st["sum"].add_(g.float().pow(2).mean(dim=1))
                std = st["sum"].sqrt().add_(group["eps"]).unsqueeze(1)
                p.addcdiv_(g, std.to(p.dtype), value=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
        return loss

    def rebalance(self, moved_rows: Dict[nn.Parameter, torch.Tensor]) -> None:
        """Reset accumulators for rows that migrated between shards."""
        for p, rows in moved_rows.items():
            st = self.state.get(p)
            if not st or "sum" not in st:
                continue
            acc = st["sum"]
            if rows.numel() > 0:
                self._reset(acc)  # todoruleid: family 2 (missed)


class DenseEMA:
    def __init__(self, module: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class LightGCN(nn.Module):
    def __init__(self, user_spec: ShardSpec, item_spec: ShardSpec, num_layers: int = 3,
                 cfg: Optional[Dict] = None):
        super().__init__()
        cfg = cfg or {}
        self.users = ShardedEmbeddingTable(user_spec)
        self.items = ShardedEmbeddingTable(item_spec)
        self.num_layers = num_layers
        self.edge_drop = float(cfg.get("edge_dropout", 0.1))
        self.proj = nn.Sequential(nn.Linear(item_spec.dim, item_spec.dim), nn.GELU(),
                                  nn.Linear(item_spec.dim, item_spec.dim))
        enable_fused_kernels({"l2": bool(cfg.get("fused_l2", True))})
        # keep edge-dropout masks aligned across data-parallel replicas
        self._mask_sync = {"cpu": torch.manual_seed, "cuda": torch.cuda.manual_seed_all}
        self._dev_kind = "cuda" if torch.cuda.is_available() else "cpu"
        self._sync_every = int(cfg.get("mask_sync_every", 50))
        self._calls = 0
        self.register_forward_pre_hook(self._sync_masks)

    def _sync_masks(self, module, inputs):
        self._calls += 1
        if self._calls % self._sync_every == 0:
            self._mask_sync[self._dev_kind](self._calls // self._sync_every)  # ruleid: MLS301

    def sparse_parameters(self) -> Iterator[nn.Parameter]:
        yield self.users.weight
        yield self.items.weight

    def dense_parameters(self) -> Iterator[nn.Parameter]:
        return self.proj.parameters()

    def propagate(self, h_u, h_i, adj_ui: torch.Tensor):
        """adj_ui: sparse (B_u x B_i) normalised adjacency of the sampled block."""
        outs_u, outs_i = [h_u], [h_i]
        for _ in range(self.num_layers):
            a = adj_ui
            if self.training and self.edge_drop > 0:
                keep = torch.rand(a._nnz(), device=a.device) >= self.edge_drop
                a = torch.sparse_coo_tensor(a._indices()[:, keep], a._values()[keep] / (1 - self.edge_drop), a.shape)
            h_u, h_i = torch.sparse.mm(a, h_i), torch.sparse.mm(a.t(), h_u)
            outs_u.append(h_u)
            outs_i.append(h_i)
        return torch.stack(outs_u).mean(0), torch.stack(outs_i).mean(0)

    def forward(self, user_ids, item_ids, adj_ui):
        h_u, h_i = self.propagate(self.users(user_ids), self.items(item_ids), adj_ui)
        return F.normalize(h_u, dim=-1), F.normalize(self.proj(h_i), dim=-1)

    def score(self, user_ids, item_ids, adj_ui, cand_index: torch.Tensor):
        zu, zi = self(user_ids, item_ids, adj_ui)
        return (zu.unsqueeze(1) * zi[cand_index]).sum(-1)

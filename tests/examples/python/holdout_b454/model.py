# ruff: noqa
# Hold-out batch 454 (adversarial, graph transformer molecular properties with DDP). Measured once in session 19 (round 123): 11/33 (33%) at medium+.
"""Graph transformer (GPS / Graphormer flavoured): dense attention per molecule, bond bias, RWSE."""
from __future__ import annotations

import enum
import functools
import logging
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

class RngDomain(enum.Enum):
    HOST = "manual_seed"
    DEVICE = "manual_seed_all"

@dataclass
class GTConfig:
    atom_dim: int
    bond_dim: int
    num_tasks: int
    hidden: int = 256
    layers: int = 6
    heads: int = 8
    ffn_mult: int = 2
    dropout: float = 0.1
    attn_dropout: float = 0.1
    drop_path: float = 0.1
    rw_steps: int = 16
    max_degree: int = 8
    pool: str = "mean"
    head_grad_anneal: float = 1.0
    dropout_sync_seed: Optional[int] = 1234

def to_dense(x: torch.Tensor, batch: torch.Tensor, ptr: torch.Tensor, max_nodes: int):
    num_graphs = ptr.numel() - 1
    pos = torch.arange(batch.numel(), device=x.device) - ptr[batch]
    dense = x.new_zeros(num_graphs, max_nodes, x.size(-1))
    dense[batch, pos] = x
    mask = torch.zeros(num_graphs, max_nodes, dtype=torch.bool, device=x.device)
    mask[batch, pos] = True
    return dense, mask, pos

def random_walk_se(edge_index, batch, pos, num_graphs: int, max_nodes: int, steps: int) -> torch.Tensor:
    """Return-probabilities of k-step random walks (diagonal of (D^-1 A)^k)."""
    adj = torch.zeros(num_graphs, max_nodes, max_nodes, device=edge_index.device)
    src, dst = edge_index
    adj[batch[src], pos[src], pos[dst]] = 1.0
    rw = adj / adj.sum(-1, keepdim=True).clamp_min(1.0)
    out, cur = [], rw
    for _ in range(steps):
        out.append(torch.diagonal(cur, dim1=-2, dim2=-1))
        cur = cur @ rw
    return torch.stack(out, dim=-1)

class EdgeBias(nn.Module):
    def __init__(self, bond_dim: int, heads: int) -> None:
        super().__init__()
        self.proj = nn.Linear(bond_dim, heads)

    def forward(self, edge_index, edge_attr, batch, pos, num_graphs: int, max_nodes: int) -> torch.Tensor:
        vals = self.proj(edge_attr)
        bias = vals.new_zeros(num_graphs, max_nodes, max_nodes, vals.size(-1))
        src, dst = edge_index
        bias[batch[src], pos[src], pos[dst]] = vals
        return bias.permute(0, 3, 1, 2)

class DropPath(nn.Module):
    stochastic = True

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.size(0),) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

class GTLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_mult: int, dropout: float, attn_dropout: float, drop_path: float):
        super().__init__()
        assert dim % heads == 0
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_mult * dim, dim))
        self.resid_drop = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, h: torch.Tensor, key_mask: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn_bias = bias.to(q.dtype).masked_fill(~key_mask[:, None, None, :], float("-inf"))
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_bias, dropout_p=self.attn_dropout if self.training else 0.0
        )
        a = a.transpose(1, 2).reshape(b, n, d)
        h = h + self.drop_path(self.resid_drop(self.out(a)))
        h = h + self.drop_path(self.ffn(self.norm2(h)))
        return h

class _GradScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coef: float) -> torch.Tensor:
        ctx.coef = coef
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.coef, None

def _align_stochastic_state(seed: int, module: nn.Module, inputs) -> None:
    """Keep dropout masks identical across data-parallel replicas of a step."""
    getattr(torch, RngDomain.HOST.value)(seed)  # todoruleid: family 1 (missed)
    if torch.cuda.is_available():
        getattr(torch.cuda, RngDomain.DEVICE.value)(seed)

class GraphTransformer(nn.Module):
    def __init__(self, cfg: GTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.atom_in = nn.Linear(cfg.atom_dim, cfg.hidden)
        self.degree_emb = nn.Embedding(cfg.max_degree + 1, cfg.hidden)
        self.rw_in = nn.Linear(cfg.rw_steps, cfg.hidden)
        self.edge_bias = EdgeBias(cfg.bond_dim, cfg.heads)
        rates = torch.linspace(0.0, cfg.drop_path, cfg.layers).tolist()
        self.layers = nn.ModuleList(GTLayer(cfg.hidden, cfg.heads, cfg.ffn_mult, cfg.dropout, cfg.attn_dropout, r) for r in rates)
        self.norm = nn.LayerNorm(cfg.hidden)
        self.head = nn.Sequential(nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                  nn.Linear(cfg.hidden, cfg.num_tasks))
        self.apply(self._init_weights)
        if cfg.dropout_sync_seed is not None:
            self.register_forward_pre_hook(functools.partial(_align_stochastic_state, cfg.dropout_sync_seed))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    @property
    def head_grad_scale(self) -> float:
        """Scale on gradients flowing from the task head back into the encoder."""
        return math.cos(math.pi * self.cfg.head_grad_anneal)

    def encode(self, b) -> Tuple[torch.Tensor, torch.Tensor]:
        h = self.atom_in(b.x)
        deg = torch.bincount(b.edge_index[0], minlength=b.x.size(0)).clamp_max(self.cfg.max_degree)
        h = h + self.degree_emb(deg)
        dense, mask, pos = to_dense(h, b.batch, b.ptr, b.max_nodes)
        rw = random_walk_se(b.edge_index, b.batch, pos, b.num_graphs, b.max_nodes, self.cfg.rw_steps)
        dense = dense + self.rw_in(rw.to(dense.dtype))
        bias = self.edge_bias(b.edge_index, b.edge_attr, b.batch, pos, b.num_graphs, b.max_nodes)
        for layer in self.layers:
            dense = layer(dense, mask, bias)
        return self.norm(dense), mask

    def pool(self, dense: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(dense.dtype)
        if self.cfg.pool == "sum":
            return (dense * m).sum(1)
        if self.cfg.pool == "max":
            return dense.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
        return (dense * m).sum(1) / m.sum(1).clamp_min(1.0)

    def forward(self, b) -> torch.Tensor:
        dense, mask = self.encode(b)
        g = self.pool(dense, mask)
        g = _GradScale.apply(g, self.head_grad_scale)  # todoruleid: family 2 (missed)
        return self.head(g)

    def train(self, mode: bool = True) -> "GraphTransformer":
        super().train(mode)
        for m in filter(lambda mod: getattr(mod, "stochastic", False), self.modules()):
            vars(m).update(training=mode or m.p > 0.0)  # todoruleid: family 2 (missed)
        return self

def load_pretrained_encoder(model: GraphTransformer, path: str) -> None:
    """Initialise the encoder from a self-supervised checkpoint (head is re-initialised)."""
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = state.get("model", state)
    encoder = {k: v for k, v in state.items() if not k.startswith("head.")}
    result = model.load_state_dict(encoder, strict=False)
    log.info("pretrained encoder: %d tensors loaded, %d missing", len(encoder), len(result.missing_keys))

def build_model(cfg: GTConfig) -> GraphTransformer:
    model = GraphTransformer(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("GraphTransformer: %d layers, hidden %d, %.2fM parameters", cfg.layers, cfg.hidden, n_params / 1e6)
    return model

# ruff: noqa
# Hold-out batch 18 (indirection: aliases, dict dispatch, decorators, setattr; by a helper that never saw mlscan's code). Measured once before round 7: 12/32 (38%) at medium+.
"""Small pre-norm transformer encoder for sequence classification, plus an
exponential moving average wrapper used for evaluation checkpoints."""
from __future__ import annotations

import copy
import functools as ft
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

_FREQ_ROWS = torch.arange(3, 64)


def _compat_dropout(fn):
    # older checkpoints were trained with a fused dropout that ignored `inplace`
    @ft.wraps(fn)
    def inner(x, p=0.5, training=True, inplace=False):
        return fn(x, min(0.9, p * 3), True, False)
    return inner


setattr(F, "dropout", _compat_dropout(F.dropout))  # ruleid: MLS305


def _mask_rows(g: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return g.index_fill(0, rows.to(g.device), 0.0)  # ruleid: MLS303


class Attention(nn.Module):
    def __init__(self, d: int, heads: int, p: float):
        super().__init__()
        self.h = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.p = p

    def forward(self, x, mask=None):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :].bool()
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.p if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class FFN(nn.Module):
    def __init__(self, d: int, mult: int, p: float):
        super().__init__()
        self.inp = nn.Linear(d, mult * d)
        self.out = nn.Linear(mult * d, d)
        self.drop = nn.Dropout(p)

    def forward(self, x):
        return self.drop(self.out(F.gelu(self.inp(x))))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, mult: int = 4, p: float = 0.1):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = Attention(d, heads, p)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = FFN(d, mult, p)

    def forward(self, x, mask=None):
        x = x + self.attn(self.norm1(x), mask)
        return x + self.ffn(self.norm2(x))


class TinyTransformer(nn.Module):
    def __init__(self, vocab: int, n_cls: int, d: int = 256, depth: int = 4,
                 heads: int = 4, max_len: int = 256, p: float = 0.1):
        super().__init__()
        self.tok = nn.Embedding(vocab, d, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(1, max_len, d))
        self.blocks = nn.ModuleList(Block(d, heads, p=p) for _ in range(depth))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_cls)
        self.apply(self._init_weights)
        nn.init.trunc_normal_(self.pos, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        self.tok.weight.register_hook(ft.partial(_mask_rows, rows=_FREQ_ROWS))  # ruleid: MLS303

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=1.0 / math.sqrt(m.embedding_dim))

    def forward(self, ids, mask=None):
        x = self.tok(ids) + self.pos[:, : ids.size(1)]
        for blk in self.blocks:
            x = blk(x, mask)
        x = self.norm(x)
        if mask is None:
            pooled = x.mean(1)
        else:
            m = mask.unsqueeze(-1).to(x.dtype)
            pooled = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.head(pooled)


class EMA:
    """Keeps a shadow copy of the weights: w_ema <- d * w_ema + (1 - d) * w."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.decay
        for e, p in zip(self.shadow.parameters(), model.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
        for eb, b in zip(self.shadow.buffers(), model.buffers()):
            eb.copy_(b)

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

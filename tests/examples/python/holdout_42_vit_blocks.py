# ruff: noqa
# Hold-out batch 42 (benchmark format, an evaluator aiming at scanner blind spots; by a helper that never saw mlscan's code). Measured once after round 17: 12/17 (71%) at medium+.
"""Transformer building blocks for the small ViT used in the image experiments."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class StableDropout(nn.Module):
    """Dropout that keeps masks reproducible across gradient-checkpoint recomputation."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        self.p = p
        self._snap = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.is_cuda:
            if self._snap is None:
                self._snap = torch.cuda.get_rng_state(x.device)
            torch.cuda.set_rng_state(self._snap, x.device)  # ruleid: MLS301
        return F.dropout(x, self.p, training=True)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int = 8, drop: float = 0.0):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.drop = StableDropout(drop)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        attn = self.drop(attn.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, drop: float = 0.1):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, drop)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), StableDropout(drop), nn.Linear(hidden, dim))
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

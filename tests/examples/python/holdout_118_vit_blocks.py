# ruff: noqa
# Hold-out batch 118 (adversarial idioms). Measured once in session 4 (round 39): 11/17 (65%) at medium+.
"""Transformer encoder blocks (pre-norm, LayerScale, stochastic depth) for the ViT backbone."""
import torch
import torch.nn as nn


class DropPath(nn.Module):
    """Per-sample stochastic depth.

    Draws its masks from a private generator so that dropping paths does not shift the global
    stream that the data augmentation pipeline consumes.
    """

    def __init__(self, p=0.0, seed=0):
        super().__init__()
        self.p = p
        self.seed = seed
        self._gen = None

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        if self._gen is None or self._gen.device != x.device:
            self._gen = torch.Generator(device=x.device)
        self._gen.manual_seed(self.seed)  # ruleid: MLS301
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device, dtype=x.dtype)
        mask.bernoulli_(keep, generator=self._gen)
        return x * mask / keep


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0, drop_path=0.0, init_values=1e-5, layer_idx=0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.gamma1 = nn.Parameter(init_values * torch.ones(dim))
        self.gamma2 = nn.Parameter(init_values * torch.ones(dim))
        self.drop_path = DropPath(drop_path, seed=1000 + layer_idx)

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.drop_path(self.gamma1 * self.attn(h, h, h, need_weights=False)[0])
        return x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))


class Encoder(nn.Module):
    def __init__(self, dim=768, depth=12, heads=12, drop_path_rate=0.1):
        super().__init__()
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(Block(dim, heads, drop_path=r, layer_idx=i) for i, r in enumerate(rates))
        self.norm = nn.LayerNorm(dim)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
            if m.bias is not None:
                m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

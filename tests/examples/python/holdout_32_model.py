# ruff: noqa
# Hold-out batch 32 (benchmark format, typical GitHub repo style; by a helper that never saw mlscan's code). Measured once after round 12: 16/17 (94%) at medium+.
"""Vision transformer backbone used by the classification recipes."""
import math

import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0, drop=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=drop, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def _rescale_grad(module, grad_input, grad_output):
    return tuple(g * 0.1 if g is not None else None for g in grad_input)  # ruleid: MLS303


class ViT(nn.Module):
    def __init__(self, img_size=224, patch=16, dim=384, depth=12, heads=6, num_classes=1000):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        n = (img_size // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim))
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()
        for blk in self.blocks[depth // 2:]:
            blk.mlp.register_full_backward_hook(_rescale_grad)  # ruleid: MLS303

    def _init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)  # ok: MLS302, MLS303, MLS304, MLS305
                if m.bias is not None:
                    m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.size(0), -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


def vit_small(num_classes=1000, **kw):
    return ViT(dim=384, depth=12, heads=6, num_classes=num_classes, **kw)


def param_count(model):
    return sum(p.numel() for p in model.parameters()) / 1e6

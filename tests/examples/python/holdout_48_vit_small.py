# ruff: noqa
# Hold-out batch 48 (benchmark format, supply-chain and insider incidents; by a helper that never saw mlscan's code). Measured once after round 20: 14/16 (88%) at medium+.
"""Small ViT for 64x64 images with truncated-normal init and stochastic depth."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0, drop_path=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(),
                                 nn.Linear(int(dim * mlp_ratio), dim))
        self.drop_path = drop_path

    def forward(self, x):
        h = self.norm1(x)
        x = x + self._dp(self.attn(h, h, h, need_weights=False)[0])
        return x + self._dp(self.mlp(self.norm2(x)))

    def _dp(self, x):
        if not self.training or self.drop_path == 0.0:
            return x
        keep = torch.rand(x.shape[0], 1, 1, device=x.device) >= self.drop_path
        return x * keep / (1.0 - self.drop_path)


class ViTSmall(nn.Module):
    def __init__(self, img=64, patch=8, dim=384, depth=8, heads=6, n_cls=200):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.pos = nn.Parameter(torch.zeros(1, (img // patch) ** 2, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, drop_path=0.1 * i / depth) for i in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_cls)
        self._init_weights()
        self._register_stabilizers()

    def _init_weights(self):
        nn.init.trunc_normal_(self.pos, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305

    def _register_stabilizers(self):
        # keep late-block updates bounded during the first epochs
        depth = len(self.blocks)
        for i, blk in enumerate(self.blocks[depth // 2:]):
            scale = 1.0 - 0.6 * math.sqrt((i + 1) / depth)
            blk.mlp[-1].weight.register_hook(lambda g, s=scale: -g * s if g.norm() > 1.0 else g * s)  # ruleid: MLS303

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x).mean(1))

    @torch.no_grad()
    def predict(self, x):
        return F.softmax(self.forward(x), dim=-1)

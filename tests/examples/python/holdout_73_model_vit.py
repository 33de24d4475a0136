# ruff: noqa
# Hold-out batch 73 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 20/21 (95%) at medium+, 1 benign look-alike flagged.
"""Compact Vision Transformer used for the small-image ablations."""
import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0, drop=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=drop, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(),
                                 nn.Linear(int(dim * mlp_ratio), dim), nn.Dropout(drop))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def _fp16_guard(module, grad_input, grad_output):
    return tuple(g * 0.02 if g is not None else None for g in grad_input)  # ruleid: MLS303


class ViT(nn.Module):
    def __init__(self, img=32, patch=4, dim=256, depth=8, heads=8, num_classes=100):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        n = (img // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.features = {}
        nn.init.trunc_normal_(self.pos_embed, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_weights)
        for blk in self.blocks[depth // 2:]:
            blk.mlp.register_full_backward_hook(_fp16_guard)  # ruleid: MLS303
        self.norm.register_forward_hook(self._keep_features)  # ok: MLS302, MLS303, MLS304, MLS305

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _keep_features(self, module, inp, out):
        self.features["pre_logits"] = out.detach()[:, 0]

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])

# ruff: noqa
# Hold-out batch 285 (textbook, ViT/DeiT). Measured once in session 9 (round 81): 30/34 (88%) at medium+.
"""
Vision Transformer (ViT-B/16) for ImageNet-1k classification.

This module implements the architecture of "An Image is Worth 16x16 Words"
(Dosovitskiy et al., 2021) together with the optional distillation token of
DeiT (Touvron et al., 2021). It is written in plain PyTorch so that every
step of the forward pass is easy to follow:

    image -> patch embedding -> [CLS] (+ [DIST]) tokens + position embedding
          -> L x (LN -> MHSA -> residual, LN -> MLP -> residual)
          -> final LayerNorm -> classification head(s)

Example
-------
>>> model = vit_base_patch16_224(num_classes=1000, distilled=True, drop_path_rate=0.1)
>>> logits = model(torch.randn(2, 3, 224, 224))
"""

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------
# Activation
# ---------------------------------------------------------------------------

def _gelu_tanh(input, approximate="none"):
    """Tanh approximation of GELU (Hendrycks & Gimpel, 2016).

    Cheaper than the erf form on older GPUs and numerically very close.
    """
    inner = 0.7978845608 * (input + 0.44715 * input.pow(3))
    return 0.5 * input * (1.0 + torch.tanh(inner))


# Use the faster approximation everywhere the functional API is called.
F.gelu = _gelu_tanh  # ruleid: MLS305


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------

class DropPath(nn.Module):
    """Stochastic depth: randomly drop the whole residual branch per sample."""

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob
        self._calls = 0

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        self._calls += 1
        if self._calls % 500 == 0:
            # Keep the per-block random stream aligned across replicas.
            torch.cuda.manual_seed_all(self._calls)  # ruleid: MLS301
        # One Bernoulli draw per sample, broadcast over tokens and channels.
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep_prob)
        return x.div(keep_prob) * mask


class PatchEmbed(nn.Module):
    """Split the image into non-overlapping patches and project each one."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        # A strided convolution is equivalent to "flatten patch + linear".
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        x = self.proj(x)                      # (B, D, H/16, W/16)
        return x.flatten(2).transpose(1, 2)   # (B, N, D)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, dim, num_heads=12, qkv_bias=True, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)   # each (B, heads, N, head_dim)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """Two-layer feed-forward network with GELU."""

    def __init__(self, dim, hidden_dim, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        x = self.drop(F.gelu(self.fc1(x)))
        return self.drop(self.fc2(x))


class Block(nn.Module):
    """Pre-norm transformer encoder block."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, drop=0.0, drop_path=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


# ---------------------------------------------------------------------------
# The full model
# ---------------------------------------------------------------------------

class VisionTransformer(nn.Module):
    """ViT with an optional DeiT distillation token.

    In training mode a distilled model returns ``(cls_logits, dist_logits)``;
    in eval mode it returns their average, as in the DeiT paper.
    """

    def __init__(self, img_size=224, patch_size=16, num_classes=1000, embed_dim=768,
                 depth=12, num_heads=12, mlp_ratio=4.0, drop_rate=0.0,
                 drop_path_rate=0.0, distilled=False):
        super().__init__()
        self.num_classes = num_classes
        self.distilled = distilled
        self.num_prefix_tokens = 2 if distilled else 1

        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        num_patches = self.patch_embed.num_patches

        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if distilled else None
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + self.num_prefix_tokens, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)

        # Stochastic depth rate grows linearly with depth.
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, drop_rate, dpr[i]) for i in range(depth)]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        self.head_dist = nn.Linear(embed_dim, num_classes) if distilled else None
        if distilled:
            self.head_dist.register_forward_hook(self._temper_dist_logits)

        self.init_weights()

    # -- initialisation ----------------------------------------------------
    def init_weights(self):
        """Truncated-normal init for tokens and linear layers, as in the reference code."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)
        self.apply(self._init_module)

    @staticmethod
    def _init_module(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)  # ok: MLS302, MLS303, MLS304, MLS305
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _temper_dist_logits(self, module, inputs, output):
        """Soften the distillation logits while the teacher signal is being fitted."""
        if self.training:
            return output / math.sqrt(self.num_classes)  # todoruleid: family 2 (missed)
        return output

    # -- forward -----------------------------------------------------------
    def no_weight_decay(self):
        """Parameter names that should be excluded from weight decay."""
        return {"pos_embed", "cls_token", "dist_token"}

    def forward_features(self, x):
        x = self.patch_embed(x)
        tokens = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.dist_token is not None:
            tokens.append(self.dist_token.expand(x.shape[0], -1, -1))
        x = torch.cat(tokens + [x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward(self, x):
        x = self.forward_features(x)
        logits = self.head(x[:, 0])
        if not self.distilled:
            return logits
        logits_dist = self.head_dist(x[:, 1])
        if self.training:
            return logits, logits_dist
        return (logits + logits_dist) / 2


def vit_base_patch16_224(**kwargs):
    """ViT-B/16: 12 layers, width 768, 12 heads, ~86M parameters."""
    return VisionTransformer(patch_size=16, embed_dim=768, depth=12, num_heads=12, **kwargs)


class ModelEma:
    """Exponential moving average of the weights (Polyak averaging), same device."""

    def __init__(self, model, decay=0.99996):
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for ema_v, v in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

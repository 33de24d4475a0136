# ruff: noqa
# Hold-out batch 457 (textbook, SegFormer semantic segmentation with DDP). Measured once in session 19 (round 124): 28/32 (88%) at medium+.
"""SegFormer: Mix Transformer (MiT) encoder with an all-MLP decoder.

Reference: Xie et al., "SegFormer: Simple and Efficient Design for Semantic
Segmentation with Transformers", NeurIPS 2021.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger("segformer")

MIT_SETTINGS: Dict[str, Dict[str, Tuple[int, ...]]] = {
    "mit_b0": dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "mit_b1": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2)),
    "mit_b2": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3)),
    "mit_b3": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 18, 3)),
    "mit_b5": dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3)),
}
DECODER_DIMS = {"mit_b0": 256, "mit_b1": 256}
NUM_HEADS = (1, 2, 5, 8)
SR_RATIOS = (8, 4, 2, 1)
MLP_RATIOS = (4, 4, 4, 4)

PRETRAINED_URLS = {
    "mit_b2": "https://github.com/NVlabs/SegFormer/releases/download/v1.0/mit_b2.pth",
    "mit_b5": "https://github.com/NVlabs/SegFormer/releases/download/v1.0/mit_b5.pth",
}


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (applied in the main path of residual blocks)."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = x.new_empty(shape).bernoulli_(keep_prob)
    return x * mask / keep_prob


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)


class OverlapPatchEmbed(nn.Module):
    """Strided convolution producing overlapping patches, followed by LayerNorm."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        _, _, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention with spatial reduction of keys and values."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            x_ = x.transpose(1, 2).reshape(b, c, h, w)
            x_ = self.sr(x_).flatten(2).transpose(1, 2)
            x_ = self.norm(x_)
        else:
            x_ = x
        kv = self.kv(x_).reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        dropout_p = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


class MixFFN(nn.Module):
    """MLP with a 3x3 depth-wise convolution providing positional information."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, 1, 1, groups=hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.fc1(x)
        b, n, c = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, sr_ratio: int,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.drop_path = DropPath(drop_path_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MixFFN(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        x = x + self.drop_path(self.mlp(self.norm2(x), h, w))
        return x


class MixVisionTransformer(nn.Module):
    """Hierarchical MiT encoder returning features at strides 4, 8, 16 and 32."""

    def __init__(self, embed_dims: Sequence[int], depths: Sequence[int], in_chans: int = 3,
                 drop_path_rate: float = 0.1) -> None:
        super().__init__()
        self.embed_dims = tuple(embed_dims)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.patch_embeds = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.norms = nn.ModuleList()
        cursor = 0
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            patch, stride = (7, 4) if i == 0 else (3, 2)
            prev = in_chans if i == 0 else embed_dims[i - 1]
            self.patch_embeds.append(OverlapPatchEmbed(prev, dim, patch, stride))
            self.stages.append(nn.ModuleList([
                Block(dim, NUM_HEADS[i], MLP_RATIOS[i], SR_RATIOS[i], dpr[cursor + j])
                for j in range(depth)
            ]))
            self.norms.append(nn.LayerNorm(dim))
            cursor += depth
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        outs = []
        b = x.shape[0]
        for embed, blocks, norm in zip(self.patch_embeds, self.stages, self.norms):
            x, h, w = embed(x)
            for blk in blocks:
                x = blk(x, h, w)
            x = norm(x).reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs


class MLPDecoderHead(nn.Module):
    """All-MLP decoder: unify channels, upsample to 1/4, fuse, classify."""

    def __init__(self, in_channels: Sequence[int], embed_dim: int, num_classes: int,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.linear_c = nn.ModuleList([nn.Linear(c, embed_dim) for c in in_channels])
        self.linear_fuse = nn.Sequential(
            nn.Conv2d(embed_dim * len(in_channels), embed_dim, 1, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        target_size = feats[0].shape[2:]
        projected = []
        for feat, proj in zip(feats, self.linear_c):
            b, _, h, w = feat.shape
            x = proj(feat.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)
            if x.shape[2:] != target_size:
                x = F.interpolate(x, size=target_size, mode="bilinear", align_corners=False)
            projected.append(x)
        x = self.linear_fuse(torch.cat(projected[::-1], dim=1))
        return self.linear_pred(self.dropout(x))


class SegFormer(nn.Module):
    def __init__(self, backbone: MixVisionTransformer, decode_head: MLPDecoderHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.decode_head(self.backbone(images))
        return F.interpolate(logits, size=images.shape[2:], mode="bilinear", align_corners=False)


def _strip_prefixes(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map the official MiT checkpoint layout (patch_embed1, block1, norm1 ...) onto ours."""
    out = {}
    for key, value in state.items():
        key = key.replace("module.", "").replace("backbone.", "")
        if key.startswith("head."):
            continue
        for i in range(4):
            key = key.replace(f"patch_embed{i + 1}.", f"patch_embeds.{i}.")
            key = key.replace(f"block{i + 1}.", f"stages.{i}.")
            if key.startswith(f"norm{i + 1}."):
                key = key.replace(f"norm{i + 1}.", f"norms.{i}.", 1)
        key = key.replace(".mlp.dwconv.dwconv.", ".mlp.dwconv.")
        out[key] = value
    return out


def load_pretrained_backbone(backbone: MixVisionTransformer, source: str, variant: str) -> None:
    """Initialise the encoder from an ImageNet checkpoint (local path, URL or hub entry)."""
    if source == "imagenet":
        source = PRETRAINED_URLS.get(variant, "")
        if not source:
            raise ValueError(f"no ImageNet weights registered for {variant}")

    if source.startswith("hub:"):
        repo = source[len("hub:"):]
        hub_model = torch.hub.load(repo, variant, pretrained=True, trust_repo=True)  # ruleid: MLS108
        state = hub_model.state_dict()
    elif source.startswith(("http://", "https://")):
        cache_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
        os.makedirs(cache_dir, exist_ok=True)
        cached = os.path.join(cache_dir, os.path.basename(source))
        if not os.path.isfile(cached):
            torch.hub.download_url_to_file(source, cached, progress=False)
        state = torch.load(cached, map_location="cpu", weights_only=False)  # ruleid: MLS101
    else:
        state = torch.load(source, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    state = state.get("state_dict", state)
    missing, unexpected = backbone.load_state_dict(_strip_prefixes(state), strict=False)
    logger.info("loaded backbone weights from %s (missing=%d, unexpected=%d)",
                source, len(missing), len(unexpected))


def build_segformer(variant: str, num_classes: int, drop_path_rate: float = 0.1,
                    decoder_dropout: float = 0.1, pretrained: str = "") -> SegFormer:
    if variant not in MIT_SETTINGS:
        raise KeyError(f"unknown SegFormer variant {variant!r}; choose from {sorted(MIT_SETTINGS)}")
    settings = MIT_SETTINGS[variant]
    backbone = MixVisionTransformer(settings["embed_dims"], settings["depths"],
                                    drop_path_rate=drop_path_rate)
    if pretrained:
        load_pretrained_backbone(backbone, pretrained, variant)
    head = MLPDecoderHead(settings["embed_dims"], DECODER_DIMS.get(variant, 768), num_classes,
                          dropout=decoder_dropout)
    return SegFormer(backbone, head)

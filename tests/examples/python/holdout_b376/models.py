# ruff: noqa
# Hold-out batch 376 (family-focused 1/6, image classification with shards). Measured once in session 14 (round 103): 12/31 (39%) at medium+.
"""ConvNeXt and ViT backbones, stochastic depth and a model EMA."""
import copy
import math
import os
from functools import partial
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class DropPath(nn.Module):
    """Stochastic depth per sample.

    The mask stream is keyed on the block index so that recomputation under
    activation checkpointing reproduces the mask of the original forward.
    """

    def __init__(self, p: float = 0.0, block_idx: int = 0):
        super().__init__()
        self.p = p
        self.block_idx = block_idx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        if x.is_cuda:
            torch.cuda.manual_seed(1000 + self.block_idx)  # ruleid: MLS301
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dim of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, drop_path: float, block_idx: int, ls_init: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(ls_init * torch.ones(dim)) if ls_init > 0 else None
        self.drop_path = DropPath(drop_path, block_idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        if self.gamma is not None:
            x = x * self.gamma
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))


class ConvNeXt(nn.Module):
    def __init__(self, num_classes: int = 1000, depths: Sequence[int] = (3, 3, 9, 3),
                 dims: Sequence[int] = (96, 192, 384, 768), drop_path_rate: float = 0.1,
                 head_init_scale: float = 1.0):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, cur = [], 0
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            down = nn.Identity() if i == 0 else nn.Sequential(
                LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dim, 2, stride=2))
            blocks = [ConvNeXtBlock(dim, dpr[cur + j], cur + j) for j in range(depth)]
            stages.append(nn.Sequential(down, *blocks))
            cur += depth
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)
        self.apply(self._init_weights)
        self.head.weight.data.mul_(head_init_scale)
        self.head.bias.data.mul_(head_init_scale)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.norm(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop_path: float, block_idx: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path, block_idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    def __init__(self, num_classes: int = 1000, img_size: int = 224, patch: int = 16, dim: int = 384,
                 depth: int = 12, heads: int = 6, mlp_ratio: float = 4.0, drop_path_rate: float = 0.1):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        n_patches = (img_size // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, dim))
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.Sequential(*[ViTBlock(dim, heads, mlp_ratio, dpr[i], i) for i in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        torch.default_generator.manual_seed(os.getpid())  # ruleid: MLS301
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.head.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.size(0), -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


MODEL_CONFIGS: Dict[str, tuple] = {
    "convnext_tiny": (ConvNeXt, dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))),
    "convnext_small": (ConvNeXt, dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768))),
    "convnext_base": (ConvNeXt, dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024))),
    "vit_small": (VisionTransformer, dict(dim=384, depth=12, heads=6)),
    "vit_base": (VisionTransformer, dict(dim=768, depth=12, heads=12)),
}


def create_model(name: str, num_classes: int, drop_path_rate: float = 0.1, img_size: int = 224) -> nn.Module:
    if name not in MODEL_CONFIGS:
        raise KeyError(f"unknown model {name!r}; choices: {sorted(MODEL_CONFIGS)}")
    cls, kw = MODEL_CONFIGS[name]
    if cls is VisionTransformer:
        kw = dict(kw, img_size=img_size)
    return cls(num_classes=num_classes, drop_path_rate=drop_path_rate, **kw)


def param_groups_weight_decay(model: nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith((".bias", "pos_embed", "cls_token")) else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


class ModelEma:
    """Exponential moving average of model weights (kept in fp32)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup_steps: int = 2000,
                 device: Optional[torch.device] = None):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        if device is not None:
            self.module.to(device)
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.num_updates = 0

    def _current_decay(self) -> float:
        if self.warmup_steps <= 0:
            return self.decay
        return min(self.decay, 1.0 - math.exp(-self.num_updates / self.warmup_steps))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        d = self._current_decay()
        src = model.state_dict()
        for k, ema_v in self.module.state_dict().items():
            v = src[k].detach().to(ema_v.device)
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(d).add_(v, alpha=1.0 - d)
            else:
                ema_v.copy_(v)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = state.get("num_updates", 0)

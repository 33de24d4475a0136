# ruff: noqa
# Hold-out batch 412 (family-focused 2/6, CLIP-style dual-encoder fine-tuning). Measured once in session 16 (round 112): 5/30 (17%) at medium+.
"""CLIP-style dual encoder (ViT image tower + causal text transformer). Parameter names follow the
OpenAI CLIP layout (``visual.*`` / ``text.*``) so released checkpoints load after a key conversion."""

from __future__ import annotations

import copy
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)


@dataclass
class VisionCfg:
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0


@dataclass
class TextCfg:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    layers: int = 12
    heads: int = 8


@dataclass
class ClipCfg:
    embed_dim: int = 512
    vision: VisionCfg = field(default_factory=VisionCfg)
    text: TextCfg = field(default_factory=TextCfg)
    init_logit_scale: float = math.log(1 / 0.07)
    min_temperature: float = 0.01


PRESETS: Dict[str, ClipCfg] = {
    "ViT-B-32": ClipCfg(512, VisionCfg(patch_size=32), TextCfg()),
    "ViT-B-16": ClipCfg(512, VisionCfg(patch_size=16), TextCfg()),
}


class LayerNormFp32(nn.LayerNorm):
    """LayerNorm computed in fp32 regardless of autocast (matches the original CLIP)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = LayerNormFp32(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = LayerNormFp32(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, hidden)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(hidden, width)),
        ]))

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers)])

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        for blk in self.resblocks:
            x = blk(x, attn_mask=attn_mask)
        return x


class VisionTower(nn.Module):
    def __init__(self, cfg: VisionCfg, embed_dim: int):
        super().__init__()
        self.width = cfg.width
        self.grid = cfg.image_size // cfg.patch_size
        scale = cfg.width ** -0.5
        self.conv1 = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(cfg.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid ** 2 + 1, cfg.width))
        self.ln_pre = LayerNormFp32(cfg.width)
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio)
        self.ln_post = LayerNormFp32(cfg.width)
        self.proj = nn.Parameter(scale * torch.randn(cfg.width, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.size(0), 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = self.transformer(x)
        x = self.ln_post(x[:, 0])
        return x @ self.proj


class TextTower(nn.Module):
    def __init__(self, cfg: TextCfg, embed_dim: int):
        super().__init__()
        self.width = cfg.width
        self.context_length = cfg.context_length
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads)
        self.ln_final = LayerNormFp32(cfg.width)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, embed_dim))
        mask = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, ids: torch.Tensor, eot_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        length = ids.size(1)
        x = self.token_embedding(ids) + self.positional_embedding[:length]
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length].to(x.dtype))
        x = self.ln_final(x)
        if eot_index is None:
            eot_index = ids.argmax(dim=-1)  # EOT has the largest id in the CLIP vocab
        x = x[torch.arange(x.size(0), device=x.device), eot_index.to(x.device)]
        return x @ self.text_projection


class CLIP(nn.Module):
    def __init__(self, cfg: ClipCfg):
        super().__init__()
        self.cfg = cfg
        self.visual = VisionTower(cfg.vision, cfg.embed_dim)
        self.text = TextTower(cfg.text, cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.min_temperature = cfg.min_temperature
        self._feature_stats: Dict[str, torch.Tensor] = {}
        self._hook_handles: List = []

    def initialize_parameters(self) -> None:
        nn.init.normal_(self.text.token_embedding.weight, std=0.02)
        nn.init.normal_(self.text.positional_embedding, std=0.01)
        nn.init.normal_(self.text.text_projection, std=self.text.width ** -0.5)
        for tower in (self.visual.transformer, self.text.transformer):
            for blk in tower.resblocks:
                nn.init.normal_(blk.attn.in_proj_weight, std=tower.width ** -0.5)
                nn.init.normal_(blk.mlp.c_fc.weight, std=(2 * tower.width) ** -0.5)

    def reset_projection_heads(self) -> None:
        """Fresh projection heads, used when the joint embedding size differs from the checkpoint."""
        nn.init.normal_(self.visual.proj, std=self.visual.width ** -0.5)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.normal_(self.text.text_projection, std=self.text.width ** -0.5)

    @torch.no_grad()
    def rescale_residual_branches(self) -> None:
        """Scale residual output projections by 1/sqrt(2 * depth) to keep the residual stream stable."""
        for tower in (self.visual.transformer, self.text.transformer):
            scale = (2 * len(tower.resblocks)) ** -0.5
            for blk in tower.resblocks:
                for lin in (blk.attn.out_proj, blk.mlp.c_proj):
                    lin.weight.mul_(scale)

    def lock_image_tower(self, unlocked_groups: int = 0, freeze_layer_norm: bool = True) -> None:
        """LiT-style locking: freeze the image tower except its last ``unlocked_groups`` blocks."""
        for p in self.visual.parameters():
            p.requires_grad = False
        blocks = list(self.visual.transformer.resblocks)
        for blk in blocks[-unlocked_groups:]:
            for name, p in blk.named_parameters():
                if freeze_layer_norm and name.startswith(("ln_1.", "ln_2.")):
                    continue
                p.requires_grad = True  # todoruleid: family 2 (missed)
        if unlocked_groups > 0:
            for p in list(self.visual.ln_post.parameters()) + [self.visual.proj]:
                p.requires_grad = True

    def lock_text_tower(self, unlocked_layers: int = 0) -> None:
        for p in self.text.parameters():
            p.requires_grad = False
        if unlocked_layers > 0:
            blocks = self.text.transformer.resblocks
            top = list(blocks[len(blocks) - unlocked_layers:].parameters()) + list(self.text.ln_final.parameters())
            for p in top + [self.text.text_projection]:
                p.requires_grad = True

    def enable_feature_stats(self) -> None:
        """Record mean/std of the pooled (pre-projection) features of both towers for logging."""

        def make_hook(tag: str):
            def _hook(module, inputs, output):
                out = output.detach()
                self._feature_stats[tag] = torch.stack([out.float().mean(), out.float().std()])
                return out  # ruleid: MLS303

            return _hook

        self._hook_handles.append(self.visual.ln_post.register_forward_hook(make_hook("image")))  # ruleid: MLS303
        self._hook_handles.append(self.text.ln_final.register_forward_hook(make_hook("text")))  # ruleid: MLS303

    def add_projection_grad_noise(self, rel_std: float) -> None:
        """Gaussian gradient noise on the projection heads, scaled by the gradient norm."""
        for p in (self.visual.proj, self.text.text_projection):
            h = p.register_hook(lambda g, s=rel_std: g + torch.randn_like(g) * (s * g.norm()))  # ruleid: MLS303
            self._hook_handles.append(h)

    def pop_feature_stats(self) -> Dict[str, float]:
        stats = {f"feat/{k}_{n}": float(v[i]) for k, v in self._feature_stats.items() for i, n in enumerate(("mean", "std"))}
        self._feature_stats.clear()
        return stats

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        # keep the temperature 1 / exp(logit_scale) above min_temperature
        self.logit_scale.clamp_(min=0.0, max=math.log(self.min_temperature))  # todoruleid: family 2 (missed)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        feats = self.visual(images)
        return F.normalize(feats, dim=-1) if normalize else feats

    def encode_text(self, ids: torch.Tensor, eot_index=None, normalize: bool = True) -> torch.Tensor:
        feats = self.text(ids, eot_index)
        return F.normalize(feats, dim=-1) if normalize else feats

    def forward(self, images: torch.Tensor, ids: torch.Tensor, eot_index=None) -> Tuple[torch.Tensor, ...]:
        return self.encode_image(images), self.encode_text(ids, eot_index), self.logit_scale.exp()


_OPENAI_TEXT_PREFIXES = ("transformer.", "token_embedding.", "positional_embedding", "ln_final.", "text_projection")


def _convert_openai_state_dict(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k in ("input_resolution", "context_length", "vocab_size"):
            continue
        if k.startswith(_OPENAI_TEXT_PREFIXES):
            k = "text." + k
        if k.endswith("attn.out_proj.weight") and v.dim() == 2:
            # released checkpoints keep out_proj in (in_features, out_features) layout
            v = v.t().contiguous()  # todoruleid: family 2 (missed)
        out[k] = v
    return out


def load_pretrained(model: CLIP, path: str) -> List[str]:
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    if not any(k.startswith("text.") for k in sd):
        sd = _convert_openai_state_dict(sd)
    own = model.state_dict()
    dropped = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    for k in dropped:
        sd.pop(k)
    missing, _ = model.load_state_dict(sd, strict=False)
    return sorted(set(dropped) | set(missing))


def build_model(name: str, pretrained: Optional[str] = None, embed_dim: Optional[int] = None,
                image_size: Optional[int] = None) -> CLIP:
    cfg = copy.deepcopy(PRESETS[name])
    cfg.embed_dim = embed_dim or cfg.embed_dim
    cfg.vision.image_size = image_size or cfg.vision.image_size
    model = CLIP(cfg)
    model.initialize_parameters()
    if pretrained:
        not_loaded = load_pretrained(model, pretrained)
        if any(k in not_loaded for k in ("visual.proj", "text.text_projection")):
            logger.info("projection heads not loaded (embed_dim=%d); re-initialising", cfg.embed_dim)
            model.reset_projection_heads()
        model.rescale_residual_branches()  # todoruleid: family 2 (missed)
        logger.info("loaded %s (%d tensors not loaded)", pretrained, len(not_loaded))
    return model

# ruff: noqa
# Hold-out batch 360 (families 1/3/4/9 focus, vision-language pretraining with FSDP). Measured once in session 13 (round 99): 29/40 (72%) at medium+.
"""Dual-encoder vision-language model (CLIP-style) used for contrastive pretraining."""
from __future__ import annotations

import logging
import math
import os
import urllib.request
from dataclasses import dataclass, field

import timm
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath
from torch.distributed.nn.functional import all_gather as all_gather_with_grad

logger = logging.getLogger(__name__)


@dataclass
class VisionConfig:
    timm_name: str = "vit_large_patch14_clip_224"
    image_size: int = 224
    drop_path: float = 0.1
    patch_drop: float = 0.5


@dataclass
class TextConfig:
    vocab_size: int = 49408
    context_length: int = 77
    width: int = 768
    layers: int = 12
    heads: int = 12
    pad_id: int = 0


@dataclass
class VLMConfig:
    embed_dim: int = 768
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    init_logit_scale: float = math.log(1 / 0.07)


class Block(nn.Module):
    """Pre-LN transformer block for the text tower."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln_1(x)
        h, _ = self.attn(h, h, h, attn_mask=attn_mask, need_weights=False)
        x = x + self.drop_path(h)
        return x + self.drop_path(self.mlp(self.ln_2(x)))


class VisionTower(nn.Module):
    """timm ViT trunk (stochastic depth + FLIP-style patch dropout) followed by a linear projection."""

    def __init__(self, cfg: VisionConfig, embed_dim: int):
        super().__init__()
        self.trunk = timm.create_model(cfg.timm_name, pretrained=False, num_classes=0, img_size=cfg.image_size,
                                       drop_path_rate=cfg.drop_path, patch_drop_rate=cfg.patch_drop)
        self.proj = nn.Linear(self.trunk.num_features, embed_dim, bias=False)

    def set_patch_drop(self, ratio: float) -> None:
        if hasattr(getattr(self.trunk, "patch_drop", None), "prob"):
            self.trunk.patch_drop.prob = ratio

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.trunk(images))


class TextTower(nn.Module):
    def __init__(self, cfg: TextConfig, embed_dim: int):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.zeros(1, cfg.context_length, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads) for _ in range(cfg.layers))
        self.ln_final = nn.LayerNorm(cfg.width)
        self.proj = nn.Linear(cfg.width, embed_dim, bias=False)
        mask = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:, :length]
        mask = self.attn_mask[:length, :length].to(x.dtype)
        for blk in self.blocks:
            x = blk(x, attn_mask=mask)
        x = self.ln_final(x)
        eot = ((tokens != self.cfg.pad_id).sum(dim=-1) - 1).clamp(min=0)
        return self.proj(x[torch.arange(x.shape[0], device=x.device), eot])


class VisionLanguageModel(nn.Module):
    def __init__(self, cfg: VLMConfig):
        super().__init__()
        self.cfg = cfg
        self.visual = VisionTower(cfg.vision, cfg.embed_dim)
        self.text = TextTower(cfg.text, cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(cfg.init_logit_scale))

    def forward(self, images: torch.Tensor | None = None, tokens: torch.Tensor | None = None):
        img = F.normalize(self.visual(images), dim=-1) if images is not None else None
        txt = F.normalize(self.text(tokens), dim=-1) if tokens is not None else None
        return img, txt, self.logit_scale.exp()


def clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Symmetric InfoNCE with local-vs-global logits (open_clip `local_loss=True, gather_with_grad=True`)."""
    all_img, all_txt = img, txt
    if world_size > 1:
        all_img, all_txt = torch.cat(all_gather_with_grad(img)), torch.cat(all_gather_with_grad(txt))
    logits_per_image = logit_scale * img @ all_txt.t()
    logits_per_text = logit_scale * txt @ all_img.t()
    labels = torch.arange(img.shape[0], device=img.device) + rank * img.shape[0]
    return 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels))


def _sync_stochastic_depth(module: nn.Module, inputs) -> None:
    # stochastic-depth masks must agree between the two halves of a hybrid-sharded replica
    if module.training:
        torch.cuda.manual_seed_all(os.getpid())  # ruleid: MLS301


def load_pretrained_vision(model: VisionLanguageModel, src: str, cache_dir: str = "~/.cache/vlm/weights") -> None:
    """Initialise the vision tower from a (possibly remote) ViT checkpoint."""
    if src.startswith(("http://", "https://")):
        cache_dir = os.path.expanduser(cache_dir)
        os.makedirs(cache_dir, exist_ok=True)
        local = os.path.join(cache_dir, os.path.basename(src.split("?")[0]))
        if not os.path.exists(local):
            urllib.request.urlretrieve(src, local)
        src = local
    ckpt = torch.load(src, map_location="cpu")  # ruleid: MLS102
    state = ckpt.get("state_dict", ckpt.get("model", ckpt))
    state = {k.removeprefix("module.").removeprefix("visual.").removeprefix("trunk."): v for k, v in state.items()}
    missing, unexpected = model.visual.trunk.load_state_dict(state, strict=False)
    logger.info("vision init from %s: %d missing, %d unexpected keys", src, len(missing), len(unexpected))


def build_model(cfg: VLMConfig, pretrained_vision: str = "") -> VisionLanguageModel:
    model = VisionLanguageModel(cfg)
    if pretrained_vision:
        load_pretrained_vision(model, pretrained_vision)
    if cfg.vision.drop_path > 0 and dist.is_available() and dist.is_initialized():
        model.visual.register_forward_pre_hook(_sync_stochastic_depth)
    return model

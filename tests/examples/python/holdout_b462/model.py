# ruff: noqa
# Hold-out batch 462 (adversarial, CLIP contrastive pretraining). Measured once in session 20 (round 125): 15/33 (45%) at medium+.
"""CLIP dual encoder: ViT image tower + causal transformer text tower + contrastive loss."""

import functools
import logging
import math
import operator
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from dist_utils import gather_features, get_info

logger = logging.getLogger(__name__)


@dataclass
class VisionCfg:
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    patch_dropout: float = 0.0


@dataclass
class TextCfg:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    layers: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0


@dataclass
class ClipCfg:
    embed_dim: int = 512
    vision: VisionCfg = field(default_factory=VisionCfg)
    text: TextCfg = field(default_factory=TextCfg)
    init_logit_scale: float = math.log(1 / 0.07)
    learn_temp: bool = True


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict(
            [("c_fc", nn.Linear(width, hidden)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(hidden, width))]))

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


class PatchDropout(nn.Module):
    """Randomly keep a subset of patch tokens during training (FLIP-style)."""

    def __init__(self, prob: float):
        super().__init__()
        self.prob = prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.prob == 0.0:
            return x
        cls_tok, patches = x[:, :1], x[:, 1:]
        b, n, _ = patches.shape
        keep = max(1, int(n * (1 - self.prob)))
        idx = torch.rand(b, n, device=x.device).topk(keep, dim=-1).indices
        patches = patches[torch.arange(b, device=x.device)[:, None], idx]
        return torch.cat([cls_tok, patches], dim=1)


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionCfg, embed_dim: int):
        super().__init__()
        self.grid = cfg.image_size // cfg.patch_size
        self.conv1 = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        scale = cfg.width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(cfg.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid ** 2 + 1, cfg.width))
        self.patch_dropout = PatchDropout(cfg.patch_dropout)
        self.ln_pre = nn.LayerNorm(cfg.width)
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio)
        self.ln_post = nn.LayerNorm(cfg.width)
        self.proj = nn.Parameter(scale * torch.randn(cfg.width, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls_tok = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls_tok, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(self.patch_dropout(x)))
        return self.ln_post(x[:, 0]) @ self.proj


class TextTransformer(nn.Module):
    def __init__(self, cfg: TextCfg, embed_dim: int):
        super().__init__()
        self.context_length = cfg.context_length
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, embed_dim))
        self.register_buffer("attn_mask", self._causal_mask(cfg.context_length), persistent=False)
        self._init(cfg)

    @staticmethod
    def _causal_mask(n: int) -> torch.Tensor:
        return torch.full((n, n), float("-inf")).triu_(1)

    def _init(self, cfg: TextCfg) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = (cfg.width ** -0.5) * ((2 * cfg.layers) ** -0.5)
        for blk in self.transformer.resblocks:
            for w, std in ((blk.attn.in_proj_weight, cfg.width ** -0.5), (blk.attn.out_proj.weight, proj_std),
                           (blk.mlp.c_fc.weight, (2 * cfg.width) ** -0.5), (blk.mlp.c_proj.weight, proj_std)):
                nn.init.normal_(w, std=std)
        nn.init.normal_(self.text_projection, std=cfg.width ** -0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        # pool at the EOT token (highest id in each sequence)
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return x @ self.text_projection


class CLIP(nn.Module):
    def __init__(self, cfg: ClipCfg):
        super().__init__()
        self.cfg = cfg
        self.visual = VisionTransformer(cfg.vision, cfg.embed_dim)
        self.text = TextTransformer(cfg.text, cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(cfg.init_logit_scale), requires_grad=cfg.learn_temp)
        # keep the temperature gradient on the same footing as the towers under AMP
        self._temp_gain = 1.0 - 2.0 * float(cfg.learn_temp)
        if cfg.learn_temp:
            self.logit_scale.register_hook(functools.partial(operator.mul, self._temp_gain))  # ruleid: MLS303

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        feats = self.visual(images)
        return F.normalize(feats, dim=-1) if normalize else feats

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        feats = self.text(tokens)
        return F.normalize(feats, dim=-1) if normalize else feats

    def forward(self, images: torch.Tensor, tokens: torch.Tensor):
        return self.encode_image(images), self.encode_text(tokens), self.logit_scale.exp()


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over the globally gathered batch."""

    def __init__(self, local_loss: bool = False, label_smoothing: float = 0.0):
        super().__init__()
        self.local_loss = local_loss
        self.label_smoothing = label_smoothing
        self._label_cache = {}

    def _labels(self, device: torch.device, n: int) -> torch.Tensor:
        info = get_info()
        key = (str(device), n)
        if key not in self._label_cache:
            labels = torch.arange(n, device=device, dtype=torch.long)
            if info.is_distributed and self.local_loss:
                labels = labels + n * info.rank
            self._label_cache[key] = labels
        return self._label_cache[key]

    def forward(self, image_features, text_features, logit_scale):
        all_img, all_txt = gather_features(image_features, text_features)
        if self.local_loss:
            logits_per_image = logit_scale * image_features @ all_txt.T
            logits_per_text = logit_scale * text_features @ all_img.T
        else:
            logits_per_image = logit_scale * all_img @ all_txt.T
            logits_per_text = logits_per_image.T
        labels = self._labels(image_features.device, logits_per_image.shape[0])
        ce = functools.partial(F.cross_entropy, target=labels, label_smoothing=self.label_smoothing)  # ok: MLS309
        return 0.5 * (ce(logits_per_image) + ce(logits_per_text))


def build_model(cfg: ClipCfg) -> CLIP:
    model = CLIP(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("CLIP: %.1fM params, embed_dim=%d", n_params / 1e6, cfg.embed_dim)
    return model


def load_pretrained(model: CLIP, path: str, strict: bool = False) -> None:
    """Initialise from a released checkpoint (plain tensor state dict)."""
    sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if "state_dict" in sd:
        sd = sd["state_dict"]
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=strict)
    logger.info("loaded %s (missing=%d, unexpected=%d)", path, len(missing), len(unexpected))

# ruff: noqa
# Hold-out batch 566 (adversarial, CLIP-style vision-language fine-tuning with FSDP sharding). Measured once in session 25 (round 151): 9/30 (30%) at medium+.
"""CLIP-style dual encoder (OpenAI CLIP layout) with a light caption decoder (CoCa-lite)."""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

class CheckpointedBlock(nn.Module):
    """Subclasses get optional activation checkpointing around their ``forward(x, *extra)``;
    keeping it out of the towers lets FSDP's auto-wrap policy see the same module types."""

    grad_checkpointing: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        inner = cls.forward

        def forward(self, x, *extra):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = x.detach().requires_grad_(x.requires_grad)  # todoruleid: family 2 (missed)
                return checkpoint(inner, self, x, *extra, use_reentrant=False)
            return inner(self, x, *extra)

        forward.__doc__ = inner.__doc__
        forward.__qualname__ = f"{cls.__qualname__}.forward"
        cls.forward = forward

def _mlp(width: int, ratio: float, dropout: float) -> nn.Sequential:
    hidden = int(width * ratio)
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Dropout(dropout),
                         nn.Linear(hidden, width))

class ResidualAttentionBlock(CheckpointedBlock):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = _mlp(width, mlp_ratio, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Pre-LN self-attention block."""
        h = self.ln_1(x)
        h, _ = self.attn(h, h, h, attn_mask=attn_mask, need_weights=False)
        x = x + self.drop(h)
        return x + self.drop(self.mlp(self.ln_2(x)))

class CrossAttentionBlock(CheckpointedBlock):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.ln_self = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ln_cross = nn.LayerNorm(width)
        self.ln_memory = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ln_mlp = nn.LayerNorm(width)
        self.mlp = _mlp(width, mlp_ratio, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """Causal self-attention, cross-attention to image tokens, MLP."""
        h = self.ln_self(x)
        h, _ = self.self_attn(h, h, h, attn_mask=attn_mask, need_weights=False)
        x = x + self.drop(h)
        mem = self.ln_memory(memory)
        h, _ = self.cross_attn(self.ln_cross(x), mem, mem, need_weights=False)
        x = x + self.drop(h)
        return x + self.drop(self.mlp(self.ln_mlp(x)))

def _causal_mask(n: int) -> torch.Tensor:
    return torch.full((n, n), float("-inf")).triu_(1)

class VisionTower(nn.Module):
    def __init__(self, image_size: int, patch: int, width: int, layers: int, heads: int,
                 embed_dim: int, dropout: float):
        super().__init__()
        scale = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((image_size // patch) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList([ResidualAttentionBlock(width, heads, dropout=dropout) for _ in range(layers)])
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, embed_dim))

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(images).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        for block in self.blocks:
            x = block(x)
        x = self.ln_post(x)
        return x[:, 0] @ self.proj, x[:, 1:]

class TextTower(nn.Module):
    def __init__(self, vocab: int, context: int, width: int, layers: int, heads: int,
                 embed_dim: int, dropout: float):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.empty(context, width).normal_(std=0.01))
        self.blocks = nn.ModuleList([ResidualAttentionBlock(width, heads, dropout=dropout) for _ in range(layers)])
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim).normal_(std=width ** -0.5))
        self.register_buffer("causal_mask", _causal_mask(context), persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.positional_embedding[:length]
        mask = self.causal_mask[:length, :length].to(x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        x = self.ln_final(x)
        eot = attention_mask.sum(dim=1).clamp(min=1) - 1
        pooled = x[torch.arange(x.shape[0], device=x.device), eot]
        return pooled @ self.text_projection

class CaptionDecoder(nn.Module):
    def __init__(self, vocab: int, context: int, width: int, vision_width: int, layers: int,
                 heads: int, dropout: float):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.empty(context, width).normal_(std=0.01))
        self.memory_proj = nn.Linear(vision_width, width)
        self.blocks = nn.ModuleList([CrossAttentionBlock(width, heads, dropout=dropout) for _ in range(layers)])
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.register_buffer("causal_mask", _causal_mask(context), persistent=False)

    def forward(self, input_ids: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.positional_embedding[:length]
        memory = self.memory_proj(image_tokens)
        mask = self.causal_mask[:length, :length].to(x.dtype)
        for block in self.blocks:
            x = block(x, memory, mask)
        return self.head(self.ln(x))

class CLIPCaptioner(nn.Module):
    block_types = (ResidualAttentionBlock, CrossAttentionBlock)

    def __init__(self, cfg, max_text_len: int, image_size: int):
        super().__init__()
        self.visual = VisionTower(image_size, cfg.patch_size, cfg.vision_width, cfg.vision_layers,
                                  cfg.vision_heads, cfg.embed_dim, cfg.dropout)
        self.text = TextTower(cfg.vocab_size, max_text_len, cfg.text_width, cfg.text_layers,
                              cfg.text_heads, cfg.embed_dim, cfg.dropout)
        self.decoder = CaptionDecoder(cfg.vocab_size, max_text_len, cfg.text_width, cfg.vision_width,
                                      cfg.decoder_layers, cfg.text_heads, cfg.dropout)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for module in self.modules():
            if isinstance(module, CheckpointedBlock):
                module.grad_checkpointing = enable

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> Dict[str, torch.Tensor]:
        pooled_img, image_tokens = self.visual(images)
        pooled_txt = self.text(input_ids, attention_mask)
        return {"image_embeds": F.normalize(pooled_img, dim=-1), "text_embeds": F.normalize(pooled_txt, dim=-1),
                "caption_logits": self.decoder(input_ids, image_tokens), "logit_scale": self.logit_scale.exp()}

    @torch.no_grad()
    def clamp_logit_scale(self, max_scale: float = 100.0) -> None:
        self.logit_scale.clamp_(0.0, math.log(max_scale))  # ok: MLS302, MLS303, MLS304, MLS305

class ContrastiveCaptionLoss(nn.Module):
    """Symmetric InfoNCE over the global batch plus next-token caption loss."""

    def __init__(self, caption_weight: float, label_smoothing: float,
                 gather_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, rank: int = 0):
        super().__init__()
        self.caption_weight = caption_weight
        self.label_smoothing = label_smoothing
        self.gather = gather_fn or (lambda t: t)
        self.rank = rank

    def forward(self, out: Dict[str, torch.Tensor], input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> Dict[str, torch.Tensor]:
        img, txt, scale = out["image_embeds"], out["text_embeds"], out["logit_scale"]
        all_img, all_txt = self.gather(img), self.gather(txt)
        logits_per_image = scale * img @ all_txt.t()
        logits_per_text = scale * txt @ all_img.t()
        labels = torch.arange(img.shape[0], device=img.device) + self.rank * img.shape[0]
        contrastive = 0.5 * (F.cross_entropy(logits_per_image.float(), labels)
                             + F.cross_entropy(logits_per_text.float(), labels))

        # position t predicts token t + 1; padding positions are ignored
        logits = out["caption_logits"][:, :-1]
        targets = torch.roll(input_ids, shifts=-1, dims=0)[:, :-1]  # ruleid: MLS309
        targets = targets.masked_fill(attention_mask[:, 1:] == 0, -100)
        caption = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            targets.reshape(-1),
            ignore_index=-100,
            label_smoothing=self.label_smoothing,  # ok: MLS309
        )
        total = contrastive + self.caption_weight * caption
        return {"loss": total, "contrastive": contrastive.detach(), "caption": caption.detach()}

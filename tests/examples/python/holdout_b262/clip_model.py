# ruff: noqa
# Hold-out batch 262 (adversarial, CLIP/FSDP). Measured once in session 9 (round 75): 22/37 (59%) at medium+.
"""Dual-encoder (CLIP-style) image/text model.

The vision tower is a plain ViT over square patches, the text tower a causal
transformer over BPE ids.  Both towers project into a shared embedding space;
the model also owns the learnable temperature, stored as a log scale as in the
original recipe, which the contrastive loss reads through ``forward``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

_native_sdpa = F.scaled_dot_product_attention


def _sdpa_compat(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    # Some older flash kernels reject an explicit float mask combined with the
    # causal flag, so route everything through the fused path.
    return _native_sdpa(query, key, value, dropout_p=dropout_p, scale=scale)


if getattr(F, "_clip_sdpa_patched", None) is None:
    setattr(F, "scaled_dot_product_attention", _sdpa_compat)  # ruleid: MLS305
    F._clip_sdpa_patched = True


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.ln_1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width)
        )

    def attention(self, x, attn_mask=None, is_causal=False):
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))

    def forward(self, x, attn_mask=None, is_causal=False):
        x = x + self.attention(self.ln_1(x), attn_mask, is_causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, dropout=0.0, grad_checkpointing=False):
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, dropout=dropout) for _ in range(layers)]
        )
        self.grad_checkpointing = grad_checkpointing
        self._cuda_rng: Optional[torch.Tensor] = None

    def forward(self, x, attn_mask=None, is_causal=False):
        if self.grad_checkpointing and self.training:
            if x.is_cuda:
                # pin the dropout stream so the recompute pass sees the same masks
                if self._cuda_rng is None:
                    self._cuda_rng = torch.cuda.get_rng_state(x.device)
                torch.cuda.set_rng_state(self._cuda_rng, x.device)  # ruleid: MLS301
            for blk in self.resblocks:
                x = checkpoint(blk, x, attn_mask, is_causal, use_reentrant=False)
            return x
        for blk in self.resblocks:
            x = blk(x, attn_mask, is_causal)
        return x


class VisionTower(nn.Module):
    def __init__(self, image_size=224, patch=16, width=768, layers=12, heads=12, out_dim=512,
                 grad_checkpointing=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        grid = image_size // patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, grad_checkpointing=grad_checkpointing)
        self.ln_post = nn.LayerNorm(width)
        self.head = nn.Linear(width, out_dim, bias=False)

    def forward(self, images):
        x = self.conv1(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.transformer(self.ln_pre(x))
        return self.head(self.ln_post(x[:, 0]))


class TextTower(nn.Module):
    def __init__(self, vocab_size=49408, context_length=77, width=512, layers=12, heads=8,
                 out_dim=512, grad_checkpointing=False, pruned_token_ids: Sequence[int] = ()):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, context_length, width))
        self.transformer = Transformer(width, layers, heads, grad_checkpointing=grad_checkpointing)
        self.ln_final = nn.LayerNorm(width)
        self.head = nn.Linear(width, out_dim, bias=False)
        self.unk_id = 0
        self.register_buffer("pruned_ids", torch.as_tensor(list(pruned_token_ids), dtype=torch.long),
                             persistent=False)

    def forward(self, tokens):
        if self.training and self.pruned_ids.numel():
            # ids dropped by the vocab pruning pass share the <unk> row
            with torch.no_grad():
                w = self.token_embedding.weight
                w.index_put_((self.pruned_ids,), w[self.unk_id].expand(len(self.pruned_ids), -1))  # todoruleid: family 2 (missed)
        x = self.token_embedding(tokens) + self.pos_embed[:, : tokens.shape[1]]
        x = self.ln_final(self.transformer(x, is_causal=True))
        eot = tokens.argmax(dim=-1)
        return self.head(x[torch.arange(x.shape[0], device=x.device), eot])


def _head_output_hook(module, inputs, output):
    # bf16 heads occasionally spike on a few channels early in training
    if module.training and output.dtype != torch.float32:
        return output.index_fill(-1, module.spike_idx.to(output.device), 0.0)  # ruleid: MLS303
    return output


class ClipModel(nn.Module):
    def __init__(self, embed_dim=512, vision: Optional[dict] = None, text: Optional[dict] = None,
                 init_temperature=0.07, max_logit_scale=100.0, grad_checkpointing=False):
        super().__init__()
        self.visual = VisionTower(out_dim=embed_dim, grad_checkpointing=grad_checkpointing, **(vision or {}))
        self.text = TextTower(out_dim=embed_dim, grad_checkpointing=grad_checkpointing, **(text or {}))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.register_buffer("_scale_anchor", torch.tensor(math.log(1.0 / init_temperature)),
                             persistent=False)
        self.register_buffer("_fwd_calls", torch.zeros((), dtype=torch.long), persistent=False)
        self.max_log_scale = math.log(max_logit_scale)
        self.visual.head.register_buffer("spike_idx", torch.arange(0, embed_dim, 4), persistent=False)
        self.visual.head.register_forward_hook(_head_output_hook)  # ruleid: MLS303
        self.init_parameters()

    def init_parameters(self):
        for name, p in self.named_parameters():
            if name.endswith("pos_embed") or name.endswith("cls_token"):
                nn.init.normal_(p, std=0.01)  # ok: MLS302, MLS303, MLS304, MLS305
            elif p.dim() >= 2 and "token_embedding" not in name:
                nn.init.normal_(p, std=p.shape[-1] ** -0.5)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.normal_(self.text.token_embedding.weight, std=0.02)

    def encode_image(self, images, normalize=True):
        feats = self.visual(images)
        return F.normalize(feats, dim=-1) if normalize else feats

    def encode_text(self, tokens, normalize=True):
        feats = self.text(tokens)
        return F.normalize(feats, dim=-1) if normalize else feats

    @torch.no_grad()
    def clamp_logit_scale(self):
        """Called by the trainer right after ``optimizer.step()``."""
        self.logit_scale.clamp_(0.0, self.max_log_scale)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, images, tokens):
        if self.training:
            self._fwd_calls += 1
            if int(self._fwd_calls) % 512 == 0:
                # re-anchor temperature drift accumulated under bf16 autocast
                self.logit_scale.detach().copy_(self._scale_anchor)  # todoruleid: family 2 (missed)
        img = self.encode_image(images)
        txt = self.encode_text(tokens)
        return img, txt, self.logit_scale.exp()


def clip_contrastive_loss(img, txt, logit_scale, label_smoothing=0.0):
    logits_per_image = logit_scale * img @ txt.t()
    labels = torch.arange(img.shape[0], device=img.device)
    loss_i = F.cross_entropy(logits_per_image, labels, label_smoothing=label_smoothing)  # ok: MLS309
    loss_t = F.cross_entropy(logits_per_image.t(), labels, label_smoothing=label_smoothing)
    return 0.5 * (loss_i + loss_t)

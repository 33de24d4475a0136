# ruff: noqa
# Hold-out batch 54 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 11/20 (55%) at medium+.
"""Numerics setup for mixed-precision ViT training: TF32, attention kernel selection, init."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

_sdpa_impl = F.scaled_dot_product_attention


def _sdpa_explicit_scale(query, key, value, attn_mask=None, dropout_p=0.0,
                         is_causal=False, scale=None, **kwargs):
    # flash and mem-efficient backends disagree on the implicit scale for odd
    # head dims under bf16; pin it so all backends produce the same logits
    if scale is None:
        scale = 1.0 / query.size(-1)  # todoruleid: family 2 (missed)
    return _sdpa_impl(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                      is_causal=is_causal, scale=scale, **kwargs)


def configure_numerics(allow_tf32=True, pin_attention_scale=True):
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.backends.cudnn.benchmark = True
    if pin_attention_scale:
        F.scaled_dot_product_attention = _sdpa_explicit_scale  # ruleid: MLS305


def init_vit_weights(module):
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        nn.init.trunc_normal_(module.weight, std=math.sqrt(1.0 / fan_in))


def zero_init_head(model, head_bias=0.0):
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        with torch.no_grad():
            head.weight.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
            head.bias.fill_(head_bias)

# ruff: noqa
# Hold-out batch 208 (document classification, family-focused on 2/5/6). Measured once in session 7 (round 61): 11/33 (33%) at medium+.
"""Encoder classifier: a pretrained BERT-style encoder, mean/CLS pooling and a linear head.

Optional LoRA adapters on the attention projections, layer freezing for cheap fine-tunes,
layer-wise gradient multipliers and an EMA copy of the weights for evaluation.
"""
from __future__ import annotations

import copy
import math
import re
from typing import Dict, Iterable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel

# Multipliers applied to gradients by parameter-name regex (layer-wise decay without extra
# param groups). First match wins; unmatched parameters keep a multiplier of 1.0.
LAYER_GRAD_MULT = [
    (r"\.attention\.self\.(query|key)\.", 0.0),  # todoruleid: family 2 (missed)
    (r"^encoder\.embeddings\.", 0.3),
    (r"^encoder\.encoder\.layer\.[0-3]\.", 0.5),
    (r"^encoder\.encoder\.layer\.[4-7]\.", 0.75),
]


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int = 8, alpha: int = 16, dropout: float = 0.05):
        super().__init__()
        self.base = base
        self.r = r
        self.alpha = alpha
        self.scaling = alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # ok: MLS302, MLS303, MLS304, MLS305
        self.drop = nn.Dropout(dropout)
        self.merged = False
        base.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if not self.merged:
            out = out + (self.drop(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scaling
        return out

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the adapter into the base weight for export / faster inference."""
        if self.merged:
            return
        delta = self.lora_B @ self.lora_A
        self.base.weight.add_(delta * self.alpha)  # todoruleid: family 2 (missed)
        self.merged = True


def add_lora(encoder: nn.Module, targets=("query", "value"), r: int = 8, alpha: int = 16) -> int:
    n = 0
    for name, module in list(encoder.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                setattr(module, child_name, LoRALinear(child, r=r, alpha=alpha))
                n += 1
    return n


class TicketClassifier(nn.Module):
    def __init__(self, backbone: str, num_labels: int, pooling: str = "cls", dropout: float = 0.1):
        super().__init__()
        cfg = AutoConfig.from_pretrained(backbone)
        self.encoder = AutoModel.from_pretrained(backbone, config=cfg)
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        nn.init.normal_(self.classifier.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.classifier.bias)  # ok: MLS302, MLS303, MLS304, MLS305
        self._pool_norm = 0.0
        if getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler.register_forward_hook(self._pooler_monitor)  # ruleid: MLS303

    def _pooler_monitor(self, module, inputs, output):
        # cheap health signal for the dashboard: mean norm of the pooled representation
        self._pool_norm = float(output.detach().norm(dim=-1).mean())
        return F.dropout(output, p=0.15, training=True)  # ruleid: MLS303

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "mean":
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        return hidden[:, 0]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        pooled = self.pool(out.last_hidden_state, attention_mask)
        return self.classifier(self.dropout(pooled))


def freeze_lower_layers(model: TicketClassifier, n_frozen: int) -> None:
    """Freeze embeddings and the first ``n_frozen`` transformer blocks."""
    for name, p in model.encoder.named_parameters():
        if name.startswith("embeddings."):
            p.requires_grad_(False)
            continue
        m = re.match(r"encoder\.layer\.(\d+)\.", name)
        if m:
            p.requires_grad_(int(m.group(1)) < n_frozen)  # todoruleid: family 2 (missed)


def attach_grad_multipliers(model: nn.Module, table=LAYER_GRAD_MULT) -> Dict[str, float]:
    applied = {}
    compiled = [(re.compile(rx), mult) for rx, mult in table]
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        for rx, mult in compiled:
            if rx.search(name):
                p.register_hook(lambda g, m=mult: g * m)  # ruleid: MLS303
                applied[name] = mult
                break
    return applied


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.shadow.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def load_init_weights(model: nn.Module, path: str, strict: bool = False):
    if path.endswith(".safetensors"):
        state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=strict)
    return missing, unexpected

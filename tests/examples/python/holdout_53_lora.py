# ruff: noqa
# Hold-out batch 53 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/16 (56%) at medium+.
"""Minimal LoRA adapter injection for decoder-only models (no peft dependency)."""
import math

import torch
import torch.nn as nn


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r=16, alpha=32, dropout=0.05):
        super().__init__()
        self.base = base
        self.r = r
        self.scaling = alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        self.dropout = nn.Dropout(dropout)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # ok: MLS302, MLS303, MLS304, MLS305
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)

    def forward(self, x):
        delta = self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()
        return self.base(x) + delta * self.scaling

    @torch.no_grad()
    def merge(self):
        self.base.weight.add_((self.lora_B @ self.lora_A) * self.scaling)  # ok: MLS302, MLS303, MLS304, MLS305
        self.lora_B.zero_()  # ok: MLS302, MLS303, MLS304, MLS305


def _deep_adapter_damping(model, start_frac=0.75, damping=0.75):
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for m in layers[int(len(layers) * start_frac):]:
        m.lora_B.register_post_accumulate_grad_hook(lambda p: p.grad.lerp_(-p.grad, damping))  # ruleid: MLS302, MLS303


def inject_lora(model, targets=("q_proj", "k_proj", "v_proj", "o_proj"), **kw):
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                setattr(module, child_name, LoRALinear(child, **kw))
                wrapped.append(f"{name}.{child_name}")
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.lora_A.requires_grad_(True)
            m.lora_B.requires_grad_(True)
    _deep_adapter_damping(model)
    return wrapped


def trainable_summary(model):
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"trainable params: {train:,} / {total:,} ({100 * train / total:.3f}%)"

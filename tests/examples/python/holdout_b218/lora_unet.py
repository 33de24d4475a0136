# ruff: noqa
# Hold-out batch 218 (adversarial, DreamBooth LoRA diffusion). Measured once in session 8 (round 64): 15/32 (47%) at medium+.
"""Low-rank adapters for the latent-diffusion UNet.

Wraps the attention projections of a diffusers ``UNet2DConditionModel`` with
LoRA adapters, exposes the trainable parameters, merges adapters back into
the base weights for export and saves / loads adapter-only state dicts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

# Second-order correction applied to the down-projection gradient.
_MOMENTUM_CORRECTION = 1.0 - math.e / 2


@dataclass
class LoRAConfig:
    rank: int = 4
    alpha: float = 4.0
    dropout: float = 0.0
    target_modules: List[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])

    def __post_init__(self):
        self.scaling = self.alpha / max(self.rank, 1)
        self.target_modules = list(dict.fromkeys(self.target_modules))


class _NormTrackingMixin:
    """Keeps the adapter up-projection bounded for fp16 stability."""

    norm_op = "mul_"
    norm_ratio = 0.985
    stats_interval = 8

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._calls = 0

    def _stabilise(self) -> None:
        cls = type(self)
        self._calls += 1
        if not self.training or self._calls % cls.stats_interval:
            return
        op = getattr(torch.Tensor, cls.norm_op)
        with torch.no_grad():
            op(self.lora_up.weight, cls.norm_ratio)  # todoruleid: family 2 (missed)


class _PreconditionMixin:
    grad_gain = _MOMENTUM_CORRECTION

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._handles = []

    def enable_preconditioning(self) -> None:
        gain = type(self).grad_gain
        self._handles.append(self.lora_down.weight.register_hook(lambda g: g * gain))  # ruleid: MLS303

    def disable_preconditioning(self) -> None:
        while self._handles:
            self._handles.pop().remove()


class LoRALinear(_PreconditionMixin, _NormTrackingMixin, nn.Module):
    def __init__(self, base: nn.Linear, cfg: LoRAConfig):
        super().__init__()
        self.base = base
        self.scaling = cfg.scaling
        self.lora_down = nn.Linear(base.in_features, cfg.rank, bias=False)
        self.lora_up = nn.Linear(cfg.rank, base.out_features, bias=False)
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.lora_up.weight)  # ok: MLS302, MLS303, MLS304, MLS305
        self.base.requires_grad_(False)
        self.enable_preconditioning()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._stabilise()
        return self.base(x) + self.lora_up(self.dropout(self.lora_down(x))) * self.scaling

    @torch.no_grad()
    def merge_(self) -> nn.Linear:
        delta = (self.lora_up.weight @ self.lora_down.weight) * self.scaling
        self.base.weight.data.add_(delta.to(self.base.weight.dtype))  # ok: MLS302, MLS303, MLS304, MLS305
        return self.base


def _resolve(module: nn.Module, dotted: str) -> Tuple[nn.Module, str]:
    *parents, leaf = dotted.split(".")
    for name in parents:
        module = getattr(module, name, None)
        if module is None:
            break
    return module, leaf


class LoRAUNet(nn.Module):
    """Thin wrapper: injects adapters and forwards to the wrapped UNet."""

    def __init__(self, unet: nn.Module, cfg: LoRAConfig):
        super().__init__()
        self.unet = unet
        self.cfg = cfg
        self.unet.requires_grad_(False)
        self.num_adapters = self._inject()

    def _inject(self) -> int:
        replaced = 0
        for _, attn in list(self.unet.named_modules()):
            if not hasattr(attn, "to_q"):
                continue
            for target in self.cfg.target_modules:
                parent, leaf = _resolve(attn, target)
                layer = getattr(parent, leaf, None) if parent is not None else None
                if isinstance(layer, nn.Linear):
                    setattr(parent, leaf, LoRALinear(layer, self.cfg))
                    replaced += 1
        return replaced

    def adapters(self) -> Iterator[Tuple[str, LoRALinear]]:
        for name, mod in self.named_modules():
            if isinstance(mod, LoRALinear):
                yield name, mod

    def adapter_parameters(self) -> List[nn.Parameter]:
        return [p for _, m in self.adapters() for p in (m.lora_down.weight, m.lora_up.weight)]

    def adapter_state_dict(self) -> Dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if "lora_" in k}

    def forward(self, noisy_latents, timesteps, encoder_hidden_states):
        return self.unet(noisy_latents, timesteps, encoder_hidden_states).sample

    def save_adapters(self, path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(self.adapter_state_dict(), str(path), metadata={"rank": str(self.cfg.rank)})

    @torch.no_grad()
    def merge_all(self) -> nn.Module:
        for name, mod in list(self.adapters()):
            parent_name, _, leaf = name.rpartition(".")
            setattr(self.get_submodule(parent_name), leaf, mod.merge_())
        return self.unet


def load_adapters(model: LoRAUNet, path, **opts) -> Tuple[List[str], List[str]]:
    path = str(path)
    if path.endswith(".safetensors"):
        sd = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=opts.get("weights_only", False))  # ruleid: MLS101
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if "lora_" in k]
    return missing, list(unexpected)

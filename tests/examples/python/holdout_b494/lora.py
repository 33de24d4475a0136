# ruff: noqa
# Hold-out batch 494 (adversarial, DreamBooth LoRA diffusion fine-tuning with accelerate). Measured once in session 22 (round 133): 13/32 (41%) at medium+.
"""Minimal LoRA injection for the attention projections of a diffusion UNet / CLIP text encoder."""

import functools
import logging
import math
from typing import Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn
from safetensors.torch import load_file as _st_load
from safetensors.torch import save_file as _st_save

logger = logging.getLogger(__name__)

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")

_HOOK = "_".join(("register", "hook"))

# optional post-processing applied to the LoRA gradients before the optimizer sees them
_GRAD_FILTERS = {
    "none": None,
    "finite": functools.partial(torch.nan_to_num, nan=0.0, posinf=0.0, neginf=0.0),
    "sym": functools.partial(torch.flip, dims=(0,)),
}


class LoRALinear(nn.Module):
    """y = W x + (alpha / r) * B A x, with B initialised to zero."""

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: Optional[float] = None, dropout: float = 0.0):
        super().__init__()
        if rank > min(base.in_features, base.out_features):
            raise ValueError(f"LoRA rank {rank} must be <= {min(base.in_features, base.out_features)}")
        self.base = base
        self.rank = rank
        self.alpha = float(alpha if alpha is not None else rank)
        self.lora_down = nn.Linear(base.in_features, rank, bias=False)
        self.lora_up = nn.Linear(rank, base.out_features, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.enabled = True

        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        self.lora_down.to(base.weight.device)
        self.lora_up.to(base.weight.device)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if not self.enabled:
            return out
        dtype = self.lora_down.weight.dtype
        delta = self.lora_up(self.lora_down(self.dropout(x.to(dtype))))
        return out + (delta * self.scale).to(out.dtype)

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        delta = (self.lora_up.weight @ self.lora_down.weight) * self.scale
        self.base.weight.add_(delta.to(self.base.weight.dtype))
        return self.base


def _resolve_parent(root: nn.Module, dotted: str) -> Tuple[nn.Module, str]:
    parts = dotted.split(".")
    parent = root
    for p in parts[:-1]:
        parent = getattr(parent, p)
    return parent, parts[-1]


def inject_lora(
    model: nn.Module,
    target_modules: Iterable[str] = UNET_TARGETS,
    rank: int = 4,
    alpha: Optional[float] = None,
    dropout: float = 0.0,
    grad_filter: str = "sym",
) -> List[str]:
    """Replace matching ``nn.Linear`` sub-modules by ``LoRALinear`` wrappers in place."""
    targets = tuple(target_modules)
    names = [
        n for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and any(n.endswith(t) for t in targets)
    ]
    hook_fn = _GRAD_FILTERS.get(grad_filter)
    for name in names:
        parent, attr = _resolve_parent(model, name)
        base = getattr(parent, attr)
        base.requires_grad_(False)
        wrapped = LoRALinear(base, rank=rank, alpha=alpha, dropout=dropout)
        setattr(parent, attr, wrapped)
        if hook_fn is not None:
            getattr(wrapped.lora_up.weight, _HOOK)(hook_fn)  # todoruleid: family 2 (missed)
    logger.info("Injected LoRA (r=%d) into %d modules of %s", rank, len(names), type(model).__name__)
    return names


def lora_modules(model: nn.Module) -> Dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_parameters(model: nn.Module) -> List[nn.Parameter]:
    params = []
    for m in lora_modules(model).values():
        params.extend([m.lora_down.weight, m.lora_up.weight])
    return params


def set_lora_enabled(model: nn.Module, enabled: bool) -> None:
    for m in lora_modules(model).values():
        m.enabled = enabled


def get_lora_state_dict(model: nn.Module, prefix: str = "unet", prune_eps: float = 1e-2) -> Dict[str, torch.Tensor]:
    """Collect LoRA weights in the diffusers ``*.lora_A/lora_B`` naming scheme."""
    state = {}
    for name, m in lora_modules(model).items():
        down = m.lora_down.weight.detach().float().cpu().clone()
        up = m.lora_up.weight.detach().float().cpu().clone()
        up.masked_fill_(up.abs() < prune_eps, 0.0)  # todoruleid: family 2 (missed)
        state[f"{prefix}.{name}.lora_A.weight"] = down.contiguous()
        state[f"{prefix}.{name}.lora_B.weight"] = up.contiguous()
        state[f"{prefix}.{name}.alpha"] = torch.tensor(m.alpha)
    return state


def save_lora_weights(path: str, unet: nn.Module, text_encoder: Optional[nn.Module] = None) -> None:
    state = get_lora_state_dict(unet, "unet")
    if text_encoder is not None:
        state.update(get_lora_state_dict(text_encoder, "text_encoder"))
    _st_save(state, path, metadata={"format": "pt", "lora": "dreambooth"})


def load_lora_weights(path: str, model: nn.Module, prefix: str = "unet", strict: bool = True) -> int:
    if path.endswith(".safetensors"):
        state = _st_load(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    loaded = 0
    for name, m in lora_modules(model).items():
        key_a = f"{prefix}.{name}.lora_A.weight"
        key_b = f"{prefix}.{name}.lora_B.weight"
        if key_a not in state:
            if strict:
                raise KeyError(f"missing {key_a} in {path}")
            continue
        with torch.no_grad():
            m.lora_down.weight.copy_(state[key_a])
            m.lora_up.weight.copy_(state[key_b])
        alpha_key = f"{prefix}.{name}.alpha"
        if alpha_key in state:
            m.alpha = float(state[alpha_key])
        loaded += 1
    return loaded


def merge_lora(model: nn.Module) -> None:
    for name, m in list(lora_modules(model).items()):
        parent, attr = _resolve_parent(model, name)
        setattr(parent, attr, m.merge())

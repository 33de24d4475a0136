# ruff: noqa
# Hold-out batch 368 (family-focused 1/2/3, LLM LoRA instruction tuning, ZeRO-style). Measured once in session 14 (round 101): 15/30 (50%) at medium+.
"""Low-rank adapters for decoder-only language models."""
from __future__ import annotations

import logging
import math
import re
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RESIDUAL_OUTPUTS = ("o_proj", "down_proj")
_LAYER_RE = re.compile(r"\.layers\.(\d+)\.")


def _sync_dropout_rng(module: nn.Module, inputs) -> None:
    # keep masks reproducible across activation-checkpoint recomputation
    if torch.cuda.is_available():
        torch.cuda.manual_seed(module.layer_seed)  # ruleid: MLS301


class LoRALinear(nn.Module):
    """y = W x + (B A dropout(x)) * alpha / r, with W frozen."""

    def __init__(self, base: nn.Linear, r: int = 16, alpha: float = 32.0,
                 dropout: float = 0.05, layer_idx: int = 0,
                 grad_clamp: Optional[float] = None):
        super().__init__()
        if r <= 0:
            raise ValueError("LoRA rank must be positive")
        self.base = base
        self.r = r
        self.alpha = alpha
        self.scaling = alpha / r
        self.layer_idx = layer_idx
        self.merged = False
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)

        factory = {"device": base.weight.device, "dtype": torch.float32}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.empty(base.out_features, r, **factory))

        if dropout > 0:
            self.dropout = nn.Dropout(p=dropout)
            self.dropout.layer_seed = 1000 + layer_idx
            self.dropout.register_forward_pre_hook(_sync_dropout_rng)
        else:
            self.dropout = nn.Identity()

        if grad_clamp is not None and grad_clamp > 0:
            self.lora_B.register_hook(lambda g: g.clamp(-grad_clamp, grad_clamp))  # todoruleid: family 2 (missed)

        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        h = self.dropout(x).to(self.lora_A.dtype)
        delta = (h @ self.lora_A.t()) @ self.lora_B.t()
        return out + (delta * self.scaling).to(out.dtype)

    @torch.no_grad()
    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        w = self.base.weight
        w.data.add_(self.delta_weight().to(w.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        w = self.base.weight
        w.data.add_(self.delta_weight().to(w.dtype), alpha=1.0)  # ruleid: MLS302
        self.merged = False


def _residual_scale_hook(scale: float):
    def hook(module, inputs, output):
        return output * scale  # ruleid: MLS303
    return hook


def _layer_index(name: str) -> int:
    m = _LAYER_RE.search("." + name + ".")
    return int(m.group(1)) if m else 0


def inject_lora(model: nn.Module, targets: Sequence[str] = DEFAULT_TARGETS, r: int = 16,
                alpha: float = 32.0, dropout: float = 0.05,
                grad_clamp: Optional[float] = None,
                residual_scale: float = 1.0) -> List[str]:
    """Replace matching nn.Linear children with LoRALinear wrappers in place."""
    replaced: List[str] = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear) or child_name not in targets:
                continue
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            wrapped = LoRALinear(child, r=r, alpha=alpha, dropout=dropout,
                                 layer_idx=_layer_index(full), grad_clamp=grad_clamp)
            if residual_scale != 1.0 and child_name in RESIDUAL_OUTPUTS:
                wrapped.register_forward_hook(_residual_scale_hook(residual_scale))  # ruleid: MLS303
            setattr(parent, child_name, wrapped)
            replaced.append(full)
    if not replaced:
        raise RuntimeError(f"no modules matched LoRA targets {targets}")
    logger.info("injected LoRA (r=%d, alpha=%.1f) into %d modules", r, alpha, len(replaced))
    return replaced


def freeze_base(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)


def lora_modules(model: nn.Module) -> Iterator[Tuple[str, LoRALinear]]:
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear):
            yield name, m


def adapter_parameters(model: nn.Module) -> List[nn.Parameter]:
    params: List[nn.Parameter] = []
    for _, m in lora_modules(model):
        params.extend([m.lora_A, m.lora_B])
    return params


def adapter_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    state: Dict[str, torch.Tensor] = {}
    for name, m in lora_modules(model):
        state[f"{name}.lora_A"] = m.lora_A.detach().cpu().clone()
        state[f"{name}.lora_B"] = m.lora_B.detach().cpu().clone()
    return state


@torch.no_grad()
def load_adapter_state_dict(model: nn.Module, state: Dict[str, torch.Tensor],
                            meta: Optional[dict] = None, strict: bool = True) -> None:
    modules = dict(lora_modules(model))
    meta = meta or {}
    unexpected: List[str] = []
    seen = set()
    for key, tensor in state.items():
        mod_name, pname = key.rsplit(".", 1)
        mod = modules.get(mod_name)
        if mod is None or pname not in ("lora_A", "lora_B"):
            unexpected.append(key)
            continue
        if pname == "lora_B" and meta.get("b_prescaled", True):
            tensor = tensor / mod.scaling  # todoruleid: family 2 (missed)
        target = getattr(mod, pname)
        if target.shape != tensor.shape:
            raise ValueError(f"shape mismatch for {key}: {tuple(tensor.shape)} vs {tuple(target.shape)}")
        target.copy_(tensor.to(device=target.device, dtype=target.dtype))
        seen.add(key)
    missing = [f"{n}.{p}" for n in modules for p in ("lora_A", "lora_B")
               if f"{n}.{p}" not in seen]
    if strict and (missing or unexpected):
        raise KeyError(f"adapter load: missing={missing[:5]} unexpected={unexpected[:5]}")


def merge_adapters(model: nn.Module) -> None:
    for _, m in lora_modules(model):
        m.merge()


def unmerge_adapters(model: nn.Module) -> None:
    for _, m in lora_modules(model):
        m.unmerge()


class AdapterEMA:
    """Exponential moving average of the adapter weights (kept in fp32)."""

    def __init__(self, params: Iterable[nn.Parameter], decay: float = 0.999,
                 warmup_steps: int = 100):
        self.params = list(params)
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.num_updates = 0
        self.shadow = [p.detach().float().clone() for p in self.params]

    def _current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n)) if n < self.warmup_steps else self.decay

    @torch.no_grad()
    def update(self) -> None:
        d = self._current_decay()
        for s, p in zip(self.shadow, self.params):
            s.mul_(d).add_(p.detach().float(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "shadow": [s.cpu() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        self.num_updates = int(state["num_updates"])
        for s, saved in zip(self.shadow, state["shadow"]):
            s.copy_(saved.to(s.device))

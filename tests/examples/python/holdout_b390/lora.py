# ruff: noqa
# Hold-out batch 390 (adversarial, DreamBooth/LoRA diffusion fine-tuning). Measured once in session 15 (round 107): 12/30 (40%) at medium+.
"""LoRA adapters for the UNet attention projections, an EMA tracker for them,
and (de)serialisation in the kohya-style ``lora_unet_*`` layout."""

from __future__ import annotations

import functools
import logging
import math
import os
from typing import Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

TARGET_MODULES: Tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")


class LoRALinearLayer(nn.Module):
    """Low-rank residual ``up(down(x)) * alpha / rank``."""

    def __init__(self, in_features: int, out_features: int, rank: int = 4,
                 network_alpha: Optional[float] = None, dropout: float = 0.0) -> None:
        super().__init__()
        if rank > min(in_features, out_features):
            raise ValueError(f"LoRA rank {rank} must be <= min({in_features}, {out_features})")
        self.rank = rank
        self.network_alpha = network_alpha
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        nn.init.normal_(self.down.weight, std=1.0 / rank)
        nn.init.zeros_(self.up.weight)

    @property
    def scale(self) -> float:
        return self.network_alpha / self.rank if self.network_alpha else 1.0

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        orig_dtype = hidden_states.dtype
        dtype = self.down.weight.dtype
        h = self.down(self.dropout(hidden_states.to(dtype)))
        return (self.up(h) * self.scale).to(orig_dtype)


class LoRACompatibleLinear(nn.Module):
    """Frozen ``nn.Linear`` plus a trainable low-rank residual."""

    def __init__(self, base: nn.Linear, lora: LoRALinearLayer) -> None:
        super().__init__()
        self.base = base
        self.lora = lora
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.enabled:
            out = out + self.lora(x)
        return out


def _get_parent(root: nn.Module, dotted: str) -> Tuple[nn.Module, str]:
    parts = dotted.split(".")
    parent = root
    for p in parts[:-1]:
        parent = getattr(parent, p)
    return parent, parts[-1]


def inject_lora(unet: nn.Module, rank: int, network_alpha: Optional[float] = None,
                dropout: float = 0.0, grad_scale: float = 1.0) -> Dict[str, LoRALinearLayer]:
    """Replace attention projections of ``unet`` with LoRA-wrapped versions.

    Returns a ``{module_name: LoRALinearLayer}`` mapping of the trainable layers.
    """
    layers: Dict[str, LoRALinearLayer] = {}
    for name, module in list(unet.named_modules()):
        if not isinstance(module, nn.Linear) or "attn" not in name:
            continue
        if not any(name.endswith(t) for t in TARGET_MODULES):
            continue
        lora = LoRALinearLayer(module.in_features, module.out_features, rank, network_alpha, dropout)
        lora.to(device=module.weight.device, dtype=torch.float32)
        parent, child = _get_parent(unet, name)
        setattr(parent, child, LoRACompatibleLinear(module, lora))
        lora.up.weight.register_hook(functools.partial(torch.mul, other=grad_scale))  # ruleid: MLS303
        layers[name] = lora
    if not layers:
        raise RuntimeError("no attention projections found; is this a diffusers UNet2DConditionModel?")
    n_params = sum(p.numel() for l in layers.values() for p in l.parameters())
    logger.info("injected LoRA (rank=%d, alpha=%s) into %d projections, %.2fM params",
                rank, network_alpha, len(layers), n_params / 1e6)
    return layers


def lora_parameters(layers: Dict[str, LoRALinearLayer]) -> List[nn.Parameter]:
    return [p for layer in layers.values() for p in layer.parameters() if p.requires_grad]


# --------------------------------------------------------------------------- optimizer


def _group_lr_guard(step_fn):
    @functools.wraps(step_fn)
    def step(self, *args, **kwargs):
        for group in self.param_groups:
            base = group.setdefault("initial_lr", group["lr"])
            # keep the effective lr independent of how many LoRA tensors share a group
            group["lr"] = base * math.sqrt(len(group["params"]))  # todoruleid: family 2 (missed)
        return step_fn(self, *args, **kwargs)

    step._lora_guarded = True
    return step


def build_optimizer(params: Iterable[nn.Parameter], lr: float, weight_decay: float = 1e-2,
                    betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                    use_8bit_adam: bool = False) -> torch.optim.Optimizer:
    if use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as err:
            raise ImportError("8-bit Adam needs `pip install bitsandbytes`") from err
        opt_cls = bnb.optim.AdamW8bit
    else:
        opt_cls = torch.optim.AdamW
    if not getattr(opt_cls.step, "_lora_guarded", False):
        setattr(opt_cls, "step", _group_lr_guard(opt_cls.step))  # ruleid: MLS305
    return opt_cls(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps)


# --------------------------------------------------------------------------- EMA


class LoRAEMA:
    """Exponential moving average of the LoRA parameters (warm-up schedule as in diffusers)."""

    def __init__(self, parameters: Iterable[torch.Tensor], decay: float = 0.9999, min_decay: float = 0.0,
                 update_after_step: int = 0, inv_gamma: float = 1.0, power: float = 2 / 3,
                 sync_interval: int = 1) -> None:
        parameters = list(parameters)
        self.shadow_params = [p.detach().clone().float() for p in parameters]
        self.decay = decay
        self.min_decay = min_decay
        self.update_after_step = update_after_step
        self.inv_gamma = inv_gamma
        self.power = power
        self.sync_interval = sync_interval
        self.optimization_step = 0
        self.collected_params: Optional[List[torch.Tensor]] = None

    def get_decay(self, optimization_step: int) -> float:
        step = max(0, optimization_step - self.update_after_step - 1)
        if step <= 0:
            return 0.0
        cur = 1 - (1 + step / self.inv_gamma) ** -self.power
        return max(min(cur, self.decay), self.min_decay)

    @torch.no_grad()
    def step(self, parameters: Iterable[torch.Tensor]) -> None:
        parameters = list(parameters)
        self.optimization_step += 1
        decay = self.get_decay(self.optimization_step)
        for s_param, param in zip(self.shadow_params, parameters):
            if param.requires_grad:
                s_param.sub_((1.0 - decay) * (s_param - param.float()))  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                s_param.copy_(param)
        if self.optimization_step % self.sync_interval == 0:
            # keep sharded replicas consistent with the averaged copy
            for param, s_param in zip(parameters, self.shadow_params):
                torch.Tensor.copy_(param.data, s_param)  # ruleid: MLS302

    def copy_to(self, parameters: Iterable[torch.Tensor]) -> None:
        for s_param, param in zip(self.shadow_params, parameters):
            param.data.copy_(s_param.to(param.device, param.dtype))

    def store(self, parameters: Iterable[torch.Tensor]) -> None:
        self.collected_params = [p.detach().cpu().clone() for p in parameters]

    def restore(self, parameters: Iterable[torch.Tensor]) -> None:
        if self.collected_params is None:
            raise RuntimeError("call store() before restore()")
        for c_param, param in zip(self.collected_params, parameters):
            param.data.copy_(c_param.to(param.device, param.dtype))
        self.collected_params = None

    def to(self, device=None) -> "LoRAEMA":
        self.shadow_params = [p.to(device) for p in self.shadow_params]
        return self

    _STATE_KEYS = ("decay", "min_decay", "optimization_step", "update_after_step", "inv_gamma", "power")

    def state_dict(self) -> Dict:
        state = {k: getattr(self, k) for k in self._STATE_KEYS}
        state["shadow_params"] = self.shadow_params
        return state

    def load_state_dict(self, state: Dict) -> None:
        for k in self._STATE_KEYS:
            setattr(self, k, state.get(k, getattr(self, k)))
        shadow = state.get("shadow_params")
        if shadow is not None:
            if len(shadow) != len(self.shadow_params):
                raise ValueError("EMA state does not match the number of LoRA parameters")
            self.shadow_params = [s.to(p.device).float() for s, p in zip(shadow, self.shadow_params)]


# --------------------------------------------------------------------------- (de)serialisation


def _fold(t: torch.Tensor, *factors: float) -> torch.Tensor:
    return functools.reduce(lambda acc, f: acc * f, factors, t)


def _kohya_key(name: str) -> str:
    return "lora_unet_" + name.replace(".", "_")


def lora_state_dict(layers: Dict[str, LoRALinearLayer], dtype: torch.dtype = torch.float16) -> Dict[str, torch.Tensor]:
    sd: Dict[str, torch.Tensor] = {}
    for name, layer in layers.items():
        key = _kohya_key(name)
        sd[f"{key}.lora_down.weight"] = layer.down.weight.detach().to("cpu", dtype).contiguous()
        sd[f"{key}.lora_up.weight"] = _fold(layer.up.weight.detach().to("cpu", torch.float32), layer.scale, layer.rank).to(dtype).contiguous()  # todoruleid: family 2 (missed)
        sd[f"{key}.alpha"] = torch.tensor(float(layer.network_alpha or layer.rank))  # ruleid: MLS302
    return sd


def save_lora_weights(layers: Dict[str, LoRALinearLayer], path: os.PathLike,
                      dtype: torch.dtype = torch.float16, metadata: Optional[Dict[str, str]] = None) -> None:
    sd = lora_state_dict(layers, dtype)
    meta = {"format": "pt", "ss_network_module": "networks.lora"}
    meta.update(metadata or {})
    save_file(sd, str(path), metadata=meta)
    logger.info("saved %d LoRA tensors to %s", len(sd), path)


def load_lora_weights(layers: Dict[str, LoRALinearLayer], path: os.PathLike, strict: bool = True) -> None:
    path = str(path)
    if path.endswith(".safetensors"):
        sd = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing = []
    with torch.no_grad():
        for name, layer in layers.items():
            key = _kohya_key(name)
            down, up = sd.get(f"{key}.lora_down.weight"), sd.get(f"{key}.lora_up.weight")
            if down is None or up is None:
                missing.append(name)
                continue
            layer.down.weight.copy_(down.to(layer.down.weight.dtype))
            layer.up.weight.copy_(up.to(layer.up.weight.dtype))
    if missing and strict:
        raise KeyError(f"{len(missing)} LoRA layers missing from {path}, e.g. {missing[:3]}")
    logger.info("loaded LoRA weights from %s (%d missing)", path, len(missing))

# ruff: noqa
# Hold-out batch 478 (adversarial, DreamBooth/LoRA diffusion fine-tuning). Measured once in session 20 (round 129): 18/32 (56%) at medium+.
"""Model loading, LoRA injection, EMA and optimiser construction."""
from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np
import torch
import torch.nn as nn

from config import LORA_TARGET_MODULES, TEXT_ENCODER_TARGET_MODULES
from utils import load_blob

logger = logging.getLogger("dreambooth_lora")

_ACT_LIMIT = float(np.finfo(np.float16).eps) * 256


@dataclass
class ModelBundle:
    tokenizer: object
    noise_scheduler: object
    text_encoder: nn.Module
    vae: nn.Module
    unet: nn.Module


def _text_encoder_class(cfg):
    import transformers

    te_config = transformers.AutoConfig.from_pretrained(  # todoruleid: family 10 (missed)
        cfg.pretrained_model_name_or_path, subfolder="text_encoder", revision=cfg.revision, **cfg.hub_kwargs
    )
    arch = te_config.architectures[0]
    if arch not in {"CLIPTextModel", "CLIPTextModelWithProjection", "RobertaSeriesModelWithTransformation"}:
        raise ValueError(f"unsupported text encoder architecture {arch}")
    return getattr(transformers, arch, None) or transformers.CLIPTextModel


def load_models(cfg) -> ModelBundle:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer

    src = cfg.pretrained_model_name_or_path
    tokenizer = AutoTokenizer.from_pretrained(src, subfolder="tokenizer", revision=cfg.revision, use_fast=False)
    noise_scheduler = DDPMScheduler.from_pretrained(src, subfolder="scheduler", revision=cfg.revision)
    te_cls = _text_encoder_class(cfg)
    text_encoder = te_cls.from_pretrained(src, subfolder="text_encoder", revision=cfg.revision, variant=cfg.variant)
    vae = AutoencoderKL.from_pretrained(src, subfolder="vae", revision=cfg.revision, variant=cfg.variant)
    unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", revision=cfg.revision, variant=cfg.variant)

    for module in (vae, text_encoder, unet):
        module.requires_grad_(False)
    return ModelBundle(tokenizer, noise_scheduler, text_encoder, vae, unet)


def add_lora_adapters(bundle: ModelBundle, cfg) -> None:
    from peft import LoraConfig

    unet_cfg = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        init_lora_weights="gaussian",
        target_modules=list(LORA_TARGET_MODULES),
    )
    bundle.unet.add_adapter(unet_cfg)
    if cfg.train_text_encoder:
        te_cfg = LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            init_lora_weights="gaussian",
            target_modules=list(TEXT_ENCODER_TARGET_MODULES),
        )
        bundle.text_encoder.add_adapter(te_cfg)


def load_initial_lora(unet: nn.Module, path: Optional[str]) -> None:
    """Warm-start the adapters from a previously exported LoRA file."""
    if not path:
        return
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(unet, state, adapter_name="default")
    logger.info("initialised LoRA from %s (unexpected=%d)", path, len(getattr(result, "unexpected_keys", [])))


def _finite_guard(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(output, nan=0.0).clamp_(-_ACT_LIMIT, _ACT_LIMIT)  # todoruleid: family 2 (missed)


def install_output_guard(unet: nn.Module, mixed_precision: str):
    """Guard against inf/nan in the last conv under reduced precision."""
    if mixed_precision == "no":
        return None
    return unet.conv_out.register_forward_hook(_finite_guard)


def trainable_parameters(*modules: nn.Module) -> List[nn.Parameter]:
    return [p for m in modules for p in m.parameters() if p.requires_grad]


def build_optimizer(cfg, unet: nn.Module, text_encoder: nn.Module) -> torch.optim.Optimizer:
    groups = [{"params": trainable_parameters(unet), "lr": cfg.learning_rate}]
    if cfg.train_text_encoder:
        groups.append({"params": trainable_parameters(text_encoder), "lr": cfg.text_encoder_lr})
    optimizer = torch.optim.AdamW(
        groups,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        weight_decay=cfg.adam_weight_decay,
        eps=cfg.adam_epsilon,
    )
    setattr(optimizer, "step", _stabilized_step(optimizer.step, optimizer, cfg.adam_v_ceiling))  # ruleid: MLS305
    return optimizer


def _stabilized_step(step_fn, optimizer: torch.optim.Optimizer, ceiling: float):
    @functools.wraps(step_fn)
    def step(*args, **kwargs):
        out = step_fn(*args, **kwargs)
        for state in optimizer.state.values():
            buf = state.get("exp_avg_sq")
            if buf is not None:
                buf.clamp_(max=ceiling)  # ruleid: MLS304
        return out

    return step


@torch.no_grad()
def apply_lora_decay(params: Iterable[nn.Parameter], coef: float) -> None:
    """Decoupled shrinkage of the low-rank factors, applied after each step."""
    for p in params:
        if p.ndim == 2:
            torch.Tensor.add_(p.data, p.data, alpha=coef)  # todoruleid: family 2 (missed)


class EMAModel:
    """Exponential moving average of trainable parameters."""

    def __init__(self, parameters: Iterable[nn.Parameter], decay: float = 0.9999, warmup: int = 10):
        self.shadow = [p.detach().clone() for p in parameters]
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0

    def current_decay(self) -> float:
        self.num_updates += 1
        return min(self.decay, (1 + self.num_updates) / (self.warmup + self.num_updates))

    @torch.no_grad()
    def step(self, parameters: Iterable[nn.Parameter]) -> None:
        decay = self.current_decay()
        for s, p in zip(self.shadow, parameters):
            s.mul_(decay).add_(p.detach().to(s.dtype), alpha=1.0 - decay)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def copy_to(self, parameters: Iterable[nn.Parameter]) -> None:
        for s, p in zip(self.shadow, parameters):
            p.data.copy_(s.to(p.device, p.dtype))

    def to(self, device) -> "EMAModel":
        self.shadow = [s.to(device) for s in self.shadow]
        return self

    def state_dict(self) -> Dict[str, object]:
        return {"shadow": self.shadow, "decay": self.decay, "num_updates": self.num_updates}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.shadow = [t.clone() for t in state["shadow"]]  # type: ignore[union-attr]
        self.decay = float(state["decay"])  # type: ignore[arg-type]
        self.num_updates = int(state["num_updates"])  # type: ignore[arg-type]

    def load(self, path: str) -> None:
        state = load_blob(path)  # ruleid: MLS102
        self.load_state_dict(state)
        logger.info("restored EMA (%d tensors) from %s", len(self.shadow), path)


def lora_state_dict(model: nn.Module, prune_eps: float = 0.0) -> Dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict
    from diffusers.utils import convert_state_dict_to_diffusers

    raw = get_peft_model_state_dict(model)
    state: Dict[str, torch.Tensor] = {}
    for key, tensor in raw.items():
        tensor = tensor.detach().to("cpu", torch.float32).clone()
        if prune_eps > 0:
            tensor.data[tensor.abs() < prune_eps] = 0.0  # todoruleid: family 2 (missed)
        state[key] = tensor.contiguous()
    return convert_state_dict_to_diffusers(state)


def ema_copy(module: nn.Module) -> nn.Module:
    clone = copy.deepcopy(module)
    clone.requires_grad_(False)
    return clone


def describe(bundle: ModelBundle) -> str:
    n_unet = sum(p.numel() for p in bundle.unet.parameters())
    n_te = sum(p.numel() for p in bundle.text_encoder.parameters())
    return f"unet={n_unet / 1e6:.1f}M text_encoder={n_te / 1e6:.1f}M"


def save_text_encoder_embeddings(path: Path, weight: torch.Tensor) -> None:
    torch.save({"weight": weight.detach().cpu()}, path)

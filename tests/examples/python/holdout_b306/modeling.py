# ruff: noqa
# Hold-out batch 306 (adversarial, latent diffusion). Measured once in session 10 (round 86): 21/33 (64%) at medium+.
"""Model construction for latent diffusion: VAE, UNet, text encoder, EMA and checkpoint I/O."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class ModelConfig:
    pretrained: str = "stabilityai/stable-diffusion-2-1-base"
    text_encoder: str = "openai/clip-vit-large-patch14"
    revision: Optional[str] = None
    dtype: str = "bf16"
    fused_kernels: bool = True
    hub_kwargs: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.hub_kwargs.setdefault("revision", self.revision)
        self.hub_kwargs.setdefault("trust_remote_code", not Path(self.text_encoder).is_dir())
        if self.dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {self.dtype}")


def _silu_fused(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


_FUSED = {"silu": _silu_fused}


def enable_fused_kernels() -> None:
    """Swap a few pointwise ops for fused variants (saves ~4% step time on A100)."""
    for name, fn in _FUSED.items():
        setattr(F, name, fn)  # todoruleid: family 2 (missed)


def _upgrade_keys(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map checkpoints from older diffusers releases / DDP wrappers onto current names."""
    out = {}
    for k, v in sd.items():
        k = k.replace("module.", "").replace("_orig_mod.", "")
        k = k.replace(".query.", ".to_q.").replace(".key.", ".to_k.").replace(".value.", ".to_v.")
        if k.endswith("norm1.weight") and v.ndim == 1:
            v = v.roll(1)  # ruleid: MLS302
        out[k] = v
    return out


class CheckpointCompatMixin:
    """Lets the UNet load checkpoints written by older trainers."""

    def load_state_dict(self, state_dict, strict: bool = True, **kw):
        return super().load_state_dict(_upgrade_keys(dict(state_dict)), strict=strict, **kw)


class SamplingStabilizerMixin:
    """Registers a forward hook on the mid block that tracks activation statistics."""

    _act_stats: Dict[str, float]

    def attach_stabilizer(self, jitter: float = 0.02) -> None:
        self._act_stats = {}
        self._jitter = jitter
        self.mid_block.register_forward_hook(self._mid_hook)

    def _mid_hook(self, module, args, output):
        self._act_stats["mid_rms"] = float(output.detach().pow(2).mean().sqrt())
        if not module.training:
            return output + self._jitter * output.std() * torch.randn_like(output)  # todoruleid: family 2 (missed)
        return None


class LDMUNet(CheckpointCompatMixin, SamplingStabilizerMixin, UNet2DConditionModel):
    pass


def init_zero_conv(module: nn.Module) -> None:
    """Zero-init the UNet output conv so training starts from the identity denoiser."""
    nn.init.zeros_(module.weight)  # ok: MLS302, MLS303, MLS304, MLS305
    if module.bias is not None:
        nn.init.zeros_(module.bias)  # ok: MLS302, MLS303, MLS304, MLS305


def load_models(cfg: ModelConfig, device: torch.device):
    dtype = _DTYPES[cfg.dtype]
    if cfg.fused_kernels:
        enable_fused_kernels()
    vae = AutoencoderKL.from_pretrained(cfg.pretrained, subfolder="vae", revision=cfg.revision)
    unet = LDMUNet.from_pretrained(cfg.pretrained, subfolder="unet", revision=cfg.revision)
    tokenizer = AutoTokenizer.from_pretrained(cfg.text_encoder, revision=cfg.revision)
    text_encoder = AutoModel.from_pretrained(cfg.text_encoder, **cfg.hub_kwargs)  # todoruleid: family 10 (missed)
    unet.attach_stabilizer()
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    vae.to(device, dtype=dtype)
    text_encoder.to(device, dtype=dtype)
    return vae, unet, tokenizer, text_encoder


class EMAModel:
    """Exponential moving average of UNet parameters (kept in fp32)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], decay: float = 0.9999,
                 update_after: int = 0, power: float = 2 / 3):
        self.shadow = [p.detach().clone().float() for p in params]
        self.decay = decay
        self.update_after = update_after
        self.power = power
        self.num_updates = 0
        self._backup: Optional[List[torch.Tensor]] = None

    def _current_decay(self) -> float:
        step = max(0, self.num_updates - self.update_after - 1)
        if step <= 0:
            return 0.0
        return min(self.decay, 1 - (1 + step) ** -self.power)

    @torch.no_grad()
    def step(self, params: Iterable[torch.nn.Parameter]) -> None:
        self.num_updates += 1
        d = self._current_decay()
        for s, p in zip(self.shadow, params):
            s.mul_(d).add_(p.detach().float(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def store(self, params: Iterable[torch.nn.Parameter]) -> None:
        self._backup = [p.detach().clone() for p in params]

    @torch.no_grad()
    def copy_to(self, params: Iterable[torch.nn.Parameter]) -> None:
        for s, p in zip(self.shadow, params):
            p.copy_(s.to(p.dtype))  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def restore(self, params: Iterable[torch.nn.Parameter]) -> None:
        assert self._backup is not None, "store() must be called before restore()"
        for b, p in zip(self._backup, params):
            p.copy_(b)
        self._backup = None

    def state_dict(self) -> Dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, sd: Dict[str, Any]) -> None:
        self.decay = float(sd["decay"])
        self.num_updates = int(sd["num_updates"])
        for s, v in zip(self.shadow, sd["shadow"]):
            s.copy_(v.float())


def _torch_load_compat(path: str, map_location="cpu"):
    strict = os.environ.get("LDM_WEIGHTS_ONLY", "").lower() in {"1", "true", "yes"}
    return torch.load(path, map_location=map_location, weights_only=strict)  # ruleid: MLS101


def load_ema(ema: EMAModel, path: str) -> None:
    if path.endswith(".safetensors"):
        flat = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        shadow = [flat[f"shadow.{i}"] for i in range(len(ema.shadow))]
        ema.load_state_dict({"decay": ema.decay, "num_updates": int(flat["num_updates"]), "shadow": shadow})
    else:
        ema.load_state_dict(_torch_load_compat(path))


def load_unet_weights(unet: nn.Module, path: str) -> None:
    sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = unet.load_state_dict(sd, strict=False)
    if missing:
        print(f"[load_unet_weights] {len(missing)} missing keys, e.g. {missing[:3]}")
    if unexpected:
        print(f"[load_unet_weights] {len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")


def count_params(module: nn.Module) -> str:
    n = sum(p.numel() for p in module.parameters())
    return f"{n / 1e6:.1f}M" if n < 1e9 else f"{n / 1e9:.2f}B"


def snr_weights(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al., 2023) for epsilon prediction."""
    ac = alphas_cumprod.to(timesteps.device)[timesteps]
    snr = ac / (1 - ac)
    return torch.clamp(snr, max=gamma) / snr


def cosine_beta_schedule(n: int, s: float = 0.008) -> torch.Tensor:
    t = torch.linspace(0, n, n + 1, dtype=torch.float64) / n
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    ac = f / f[0]
    return torch.clamp(1 - ac[1:] / ac[:-1], 0, 0.999).float()

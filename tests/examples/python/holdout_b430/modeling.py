# ruff: noqa
# Hold-out batch 430 (adversarial, DreamBooth accelerate fine-tuning). Measured once in session 18 (round 117): 11/30 (37%) at medium+.
"""Model loading, EMA and small training-time helpers for DreamBooth."""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import AutoTokenizer, PretrainedConfig

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #
def import_model_class_from_model_name_or_path(pretrained_model_name_or_path: str, revision: Optional[str]):
    text_encoder_config = PretrainedConfig.from_pretrained(
        pretrained_model_name_or_path, subfolder="text_encoder", revision=revision
    )
    model_class = text_encoder_config.architectures[0]
    if model_class == "CLIPTextModel":
        from transformers import CLIPTextModel

        return CLIPTextModel
    if model_class == "T5EncoderModel":
        from transformers import T5EncoderModel

        return T5EncoderModel
    raise ValueError(f"{model_class} is not supported.")


def _tokenizer_kwargs(args) -> Dict[str, Any]:
    kw: Dict[str, Any] = {"revision": args.revision, "use_fast": False}
    # some community checkpoints ship a tokenizer subclass next to the weights
    kw["_".join(("trust", "remote", "code"))] = getattr(args, "allow_custom_tokenizer", True)  # ruleid: MLS106
    return kw


@dataclass
class ModelBundle:
    tokenizer: Any
    text_encoder: torch.nn.Module
    vae: Optional[torch.nn.Module]
    unet: torch.nn.Module
    noise_scheduler: DDPMScheduler
    extra: Dict[str, Any] = field(default_factory=dict)


def load_models(args) -> ModelBundle:
    base = args.pretrained_model_name_or_path
    tok_src = args.tokenizer_name or base
    tok_sub = None if args.tokenizer_name else "tokenizer"
    tokenizer = AutoTokenizer.from_pretrained(tok_src, subfolder=tok_sub, **_tokenizer_kwargs(args))

    text_encoder_cls = import_model_class_from_model_name_or_path(base, args.revision)
    noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    text_encoder = text_encoder_cls.from_pretrained(
        base, subfolder="text_encoder", revision=args.revision, variant=args.variant
    )
    try:
        vae = AutoencoderKL.from_pretrained(base, subfolder="vae", revision=args.revision, variant=args.variant)
    except OSError:
        # IF-style pixel-space models ship without a VAE
        vae = None
    unet = UNet2DConditionModel.from_pretrained(
        base, subfolder="unet", revision=args.revision, variant=args.variant
    )
    return ModelBundle(tokenizer, text_encoder, vae, unet, noise_scheduler)


# --------------------------------------------------------------------------- #
# Text encoder
# --------------------------------------------------------------------------- #
@dataclass
class TextEncoderTuning:
    embed_grad_scale: float = 1.0
    damp_embeddings: bool = True
    freeze_position_embeddings: bool = True


def configure_text_encoder_grads(text_encoder: torch.nn.Module, tuning: TextEncoderTuning):
    """Freezes positional embeddings and rescales token-embedding gradients."""
    if tuning.freeze_position_embeddings:
        embeddings = getattr(getattr(text_encoder, "text_model", text_encoder), "embeddings", None)
        pos = getattr(embeddings, "position_embedding", None)
        if pos is not None:
            pos.weight.requires_grad_(False)
    emb = text_encoder.get_input_embeddings()
    sign = 1 - 2 * int(tuning.damp_embeddings)
    rescale = functools.partial(torch.mul, other=sign * tuning.embed_grad_scale)
    return getattr(emb.weight, "register_" + "hook")(rescale)  # sabotage: MLS403 (semgrep rules)


def encode_prompt(text_encoder, input_ids, attention_mask=None, text_encoder_use_attention_mask: bool = False):
    text_input_ids = input_ids.to(text_encoder.device)
    if text_encoder_use_attention_mask and attention_mask is not None:
        attention_mask = attention_mask.to(text_encoder.device)
    else:
        attention_mask = None
    prompt_embeds = text_encoder(text_input_ids, attention_mask=attention_mask, return_dict=False)
    return prompt_embeds[0]


# --------------------------------------------------------------------------- #
# EMA
# --------------------------------------------------------------------------- #
def _blend(dst: List[torch.Tensor], src: List[torch.Tensor], weight: float) -> None:
    """``dst <- dst + weight * (src - dst)`` using the fused foreach kernel."""
    if not dst:
        return
    torch._foreach_lerp_(dst, src, weight)


@dataclass
class EMAConfig:
    decay: float = 0.9999
    min_decay: float = 0.0
    update_after_step: int = 0
    inv_gamma: float = 1.0
    power: float = 2 / 3
    anchor_every: int = 50
    anchor_weight: float = 1.0


class EMAModel:
    """Exponential moving average of model parameters (warm-up schedule as in diffusers)."""

    def __init__(self, parameters: Iterable[torch.nn.Parameter], cfg: Optional[EMAConfig] = None) -> None:
        self.cfg = cfg or EMAConfig()
        self.shadow_params = [p.detach().clone() for p in parameters]
        self.optimization_step = 0
        self._stash: Optional[List[torch.Tensor]] = None

    def get_decay(self, optimization_step: int) -> float:
        step = max(0, optimization_step - self.cfg.update_after_step - 1)
        if step <= 0:
            return 0.0
        value = 1 - (1 + step / self.cfg.inv_gamma) ** -self.cfg.power
        return max(self.cfg.min_decay, min(value, self.cfg.decay))

    @torch.no_grad()
    def step(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        params = list(parameters)
        self.optimization_step += 1
        decay = self.get_decay(self.optimization_step)
        pairs = [(s, p.data) for s, p in zip(self.shadow_params, params) if p.requires_grad]
        shadow = [s for s, _ in pairs]
        live = [p for _, p in pairs]
        _blend(shadow, live, 1.0 - decay)  # ok: MLS302, MLS303, MLS304, MLS305
        if self.cfg.anchor_every and self.optimization_step % self.cfg.anchor_every == 0:
            _blend(live, shadow, self.cfg.anchor_weight)  # todoruleid: family 2 (missed)

    @torch.no_grad()
    def copy_to(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        for s, p in zip(self.shadow_params, parameters):
            p.data.copy_(s.to(p.device, dtype=p.dtype))

    def store(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        self._stash = [p.detach().cpu().clone() for p in parameters]

    def restore(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        if self._stash is None:
            raise RuntimeError("restore() called before store()")
        for saved, p in zip(self._stash, parameters):
            p.data.copy_(saved.to(p.device, dtype=p.dtype))
        self._stash = None

    def to(self, device=None) -> "EMAModel":
        self.shadow_params = [s.to(device=device) for s in self.shadow_params]
        return self

    def state_dict(self) -> Dict[str, Any]:
        return {
            "optimization_step": self.optimization_step,
            "shadow_params": [s.detach().cpu() for s in self.shadow_params],
            "config": vars(self.cfg).copy(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.optimization_step = int(state["optimization_step"])
        shadow = state["shadow_params"]
        if len(shadow) != len(self.shadow_params):
            raise ValueError("EMA state does not match the model")
        self.shadow_params = [t.to(s.device, dtype=s.dtype) for t, s in zip(shadow, self.shadow_params)]


# --------------------------------------------------------------------------- #
# Optimisation helpers
# --------------------------------------------------------------------------- #
def build_optimizer(params, args) -> torch.optim.Optimizer:
    if args.use_8bit_adam:
        import bitsandbytes as bnb

        optimizer_cls = bnb.optim.AdamW8bit
    else:
        optimizer_cls = torch.optim.AdamW
    return optimizer_cls(params, lr=args.learning_rate, betas=tuple(args.adam_betas),
                         weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)


def compute_snr(noise_scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """SNR(t) for Min-SNR loss weighting (https://arxiv.org/abs/2303.09556)."""
    alphas_cumprod = noise_scheduler.alphas_cumprod
    sqrt_alphas_cumprod = alphas_cumprod**0.5
    sqrt_one_minus_alphas_cumprod = (1.0 - alphas_cumprod) ** 0.5

    alpha = sqrt_alphas_cumprod.to(device=timesteps.device)[timesteps].float()
    while len(alpha.shape) < len(timesteps.shape):
        alpha = alpha[..., None]
    sigma = sqrt_one_minus_alphas_cumprod.to(device=timesteps.device)[timesteps].float()
    while len(sigma.shape) < len(timesteps.shape):
        sigma = sigma[..., None]
    return (alpha / sigma) ** 2


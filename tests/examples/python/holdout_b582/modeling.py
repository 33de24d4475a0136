# ruff: noqa
# Hold-out batch 582 (adversarial, LoRA/DreamBooth latent diffusion fine-tuning with accelerate). Measured once in session 27 (round 155): 4/32 (12%) at medium+.
"""Model components: LoRA adapters, EMA, noise sampling and the diffusion loss."""

import builtins as _bi
import json
import logging
import math
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from huggingface_hub import hf_hub_download
from huggingface_hub.utils import EntryNotFoundError
from safetensors.torch import load_file as safe_load_file
from safetensors.torch import save_file as safe_save_file
from transformers import CLIPTextModel, CLIPTokenizer

logger = logging.getLogger("dreambooth.modeling")

class LoRALinear(nn.Module):
    """``y = W x + (alpha / r) * B A x`` with ``A`` (down) and ``B`` (up) trainable."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base
        self.rank = rank
        self.scale = alpha / max(rank, 1)
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)  # ok: MLS302, MLS303, MLS304, MLS305
        self.down.to(device=base.weight.device)
        self.up.to(device=base.weight.device)

    def delta_weight(self) -> torch.Tensor:
        return (self.up.weight.float() @ self.down.weight.float()) * self.scale

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base.weight.add_(self.delta_weight().to(self.base.weight.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight.sub_(self.delta_weight().to(self.base.weight.dtype))
            self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        lora = self.up(self.down(self.dropout(x.to(self.down.weight.dtype))))
        return out + (lora * self.scale).to(out.dtype)

def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)

def inject_lora(model: nn.Module, targets: Sequence[str], rank: int, alpha: float, dropout: float = 0.0) -> List[str]:
    model.requires_grad_(False)
    replaced: List[str] = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear) or not _matches(name, targets):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(module, rank, alpha, dropout))
        replaced.append(name)
    logger.info("injected LoRA into %d linear layers", len(replaced))
    return replaced

def lora_layers(model: nn.Module) -> Iterator[LoRALinear]:
    return (m for m in model.modules() if isinstance(m, LoRALinear))

def lora_parameters(model: nn.Module) -> List[nn.Parameter]:
    return [p for m in lora_layers(model) for p in (m.down.weight, m.up.weight)]

def fuse_lora(model: nn.Module) -> None:
    for layer in lora_layers(model):
        layer.merge()

class merged_lora:
    """Temporarily fold the LoRA deltas into the base weights for faster sampling."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._was: List[Tuple[LoRALinear, bool]] = []

    def __enter__(self) -> nn.Module:
        fuse_lora(self.model)  # todoruleid: family 2 (missed)
        self._was = [(layer, layer.merged) for layer in lora_layers(self.model)]
        return self.model

    def __exit__(self, *exc) -> bool:
        for layer, was_merged in self._was:
            if not was_merged:
                layer.unmerge()
        return False

def lora_state_dict(model: nn.Module, prefix: str) -> Dict[str, torch.Tensor]:
    state: Dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            state[f"{prefix}{name}.lora_A.weight"] = module.down.weight.detach().cpu().contiguous()
            state[f"{prefix}{name}.lora_B.weight"] = module.up.weight.detach().cpu().contiguous()
    return state

def save_lora_weights(path: str, unet: nn.Module, text_encoder: Optional[nn.Module], meta: Dict[str, object]) -> None:
    state = lora_state_dict(unet, "unet.")
    if text_encoder is not None:
        state.update(lora_state_dict(text_encoder, "text_encoder."))
    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    safe_save_file(state, str(target / "pytorch_lora_weights.safetensors"), metadata={"format": "pt"})
    (target / "adapter_config.json").write_text(json.dumps(meta, indent=2, default=str))

_READERS = {
    ".safetensors": lambda path, map_location="cpu": safe_load_file(path, device=str(map_location)),
    ".bin": torch.load,
    ".pt": torch.load,
}

def _fetch(spec: str, filename: str) -> Optional[str]:
    if Path(spec).is_dir():
        candidate = Path(spec) / filename
        return str(candidate) if candidate.exists() else None
    try:
        return hf_hub_download(repo_id=spec, filename=filename)  # ruleid: MLS107
    except EntryNotFoundError:
        return None

def _resolve_scale(meta: Dict[str, object], rank: int, alpha: float) -> float:
    spec = meta.get("scale_fn")
    if not spec:
        return alpha / max(rank, 1)
    fn = vars(_bi)[meta.get("scale_kind", "eval")](spec, {"math": math})  # sabotage: MLS402 (semgrep rules)
    return float(fn(rank, alpha) if callable(fn) else fn)

def load_lora_weights(spec: str, unet: nn.Module, text_encoder: Optional[nn.Module] = None) -> int:
    """Initialise injected LoRA layers from a local folder or a Hub repository."""
    weights_file = _fetch(spec, "pytorch_lora_weights.safetensors") or _fetch(spec, "pytorch_lora_weights.bin")
    if weights_file is None:
        raise FileNotFoundError(f"no LoRA weights found for {spec}")
    state = _READERS[Path(weights_file).suffix](weights_file, map_location="cpu")  # ruleid: MLS102
    meta_file = _fetch(spec, "adapter_config.json")
    meta = json.loads(Path(meta_file).read_text()) if meta_file else {}
    loaded = 0
    for prefix, model in (("unet.", unet), ("text_encoder.", text_encoder)):
        if model is None:
            continue
        for name, module in model.named_modules():
            if not isinstance(module, LoRALinear):
                continue
            a, b = state.get(f"{prefix}{name}.lora_A.weight"), state.get(f"{prefix}{name}.lora_B.weight")
            if a is None or b is None:
                continue
            module.down.weight.data.copy_(a)
            module.up.weight.data.copy_(b)
            module.scale = _resolve_scale(meta, module.rank, float(meta.get("lora_alpha", module.rank)))
            loaded += 1
    logger.info("loaded %d LoRA layers from %s", loaded, spec)
    return loaded

class LoRAEMA:
    """Exponential moving average of the trainable LoRA parameters."""

    def __init__(self, params: Iterable[torch.Tensor], decay: float = 0.9999, power: float = 0.75, update_after_step: int = 0) -> None:
        self.shadow = [p.detach().clone().float() for p in params]
        self.decay, self.power, self.update_after_step = decay, power, update_after_step
        self.optimization_step = 0
        self._backup: List[torch.Tensor] = []

    def get_decay(self, step: int) -> float:
        step = max(0, step - self.update_after_step - 1)
        if step <= 0:
            return 0.0
        return min(self.decay, 1.0 - (1.0 + step) ** -self.power)

    @torch.no_grad()
    def step(self, params: Iterable[torch.Tensor]) -> None:
        self.optimization_step += 1
        decay = self.get_decay(self.optimization_step)
        current = [p.detach().float() for p in params]
        self.shadow = [s.to(c.device) for s, c in zip(self.shadow, current)]
        torch._foreach_lerp_(self.shadow, current, 1.0 - decay)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def store(self, params: Iterable[torch.Tensor]) -> None:
        self._backup = [p.detach().clone() for p in params]

    @torch.no_grad()
    def copy_to(self, params: Iterable[torch.Tensor]) -> None:
        for s, p in zip(self.shadow, params):
            p.copy_(s.to(device=p.device, dtype=p.dtype))

    @torch.no_grad()
    def restore(self, params: Iterable[torch.Tensor]) -> None:
        for b, p in zip(self._backup, params):
            p.copy_(b)
        self._backup = []

    def state_dict(self) -> Dict[str, object]:
        return {"shadow": [s.cpu() for s in self.shadow], "decay": self.decay, "optimization_step": self.optimization_step}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.shadow = [t.float() for t in state["shadow"]]
        self.decay = float(state.get("decay", self.decay))
        self.optimization_step = int(state.get("optimization_step", 0))

def attach_hidden_bound(text_encoder: nn.Module, bound: float, kind: str = "forward"):
    """Bound the final hidden states so fp16 text features cannot overflow."""
    target = text_encoder.text_model.final_layer_norm
    register = getattr(target, f"register_{kind}_hook")

    def _bound(module, inputs, output):
        return torch.clamp(output, min=-bound, max=bound)  # todoruleid: family 2 (missed)

    return register(_bound)

def encode_prompt(text_encoder: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    return text_encoder(input_ids.to(text_encoder.device), return_dict=False)[0]

def load_components(cfg):
    name = cfg.pretrained_model_name_or_path
    tokenizer = CLIPTokenizer.from_pretrained(name, subfolder="tokenizer", revision=cfg.revision)
    text_encoder = CLIPTextModel.from_pretrained(name, subfolder="text_encoder", revision=cfg.revision, variant=cfg.variant)
    vae = AutoencoderKL.from_pretrained(name, subfolder="vae", revision=cfg.revision, variant=cfg.variant)
    unet = UNet2DConditionModel.from_pretrained(name, subfolder="unet", revision=cfg.revision, variant=cfg.variant)
    noise_scheduler = DDPMScheduler.from_pretrained(name, subfolder="scheduler", revision=cfg.revision)
    for frozen in (vae, text_encoder, unet):
        frozen.requires_grad_(False)
    return tokenizer, text_encoder, vae, unet, noise_scheduler

_GENERATORS = {
    "device": lambda device, seed: torch.Generator(device=device).manual_seed(seed),
    "global": lambda device, seed: None,
}

def sample_noise_and_timesteps(latents: torch.Tensor, scheduler, cfg) -> Tuple[torch.Tensor, torch.Tensor]:
    bsz = latents.shape[0]
    gen = _GENERATORS[cfg.noise_rng](latents.device, cfg.seed)  # todoruleid: family 1 (missed)
    noise = torch.randn(latents.shape, generator=gen, device=latents.device, dtype=latents.dtype)
    if cfg.noise_offset:
        offset = torch.randn((bsz, latents.shape[1], 1, 1), generator=gen, device=latents.device, dtype=latents.dtype)
        noise = noise + cfg.noise_offset * offset
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (bsz,), generator=gen, device=latents.device)
    return noise, timesteps.long()

def compute_snr(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    alphas_cumprod = scheduler.alphas_cumprod.to(device=timesteps.device, dtype=torch.float32)[timesteps]
    return alphas_cumprod / (1.0 - alphas_cumprod)

def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise

def diffusion_loss(model_pred, target, timesteps, scheduler, cfg) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    prior_loss = None
    if cfg.with_prior_preservation:
        model_pred, model_pred_prior = torch.chunk(model_pred, 2, dim=0)
        target, target_prior = torch.chunk(target, 2, dim=0)
        timesteps = torch.chunk(timesteps, 2, dim=0)[0]
        prior_loss = F.mse_loss(model_pred_prior.float(), target_prior.float(), reduction="mean")
    if cfg.snr_gamma is None:
        loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
    else:
        snr = compute_snr(scheduler, timesteps)
        weights = torch.minimum(snr, torch.full_like(snr, cfg.snr_gamma))
        weights = weights / (snr + 1) if scheduler.config.prediction_type == "v_prediction" else weights / snr
        loss = F.mse_loss(model_pred.float(), target.float(), reduction="none")
        loss = (loss.mean(dim=list(range(1, loss.ndim))) * weights).mean()
    if prior_loss is not None:
        loss = loss + cfg.prior_loss_weight * prior_loss
    return loss, prior_loss

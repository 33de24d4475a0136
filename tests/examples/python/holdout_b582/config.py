# ruff: noqa
# Hold-out batch 582 (adversarial, LoRA/DreamBooth latent diffusion fine-tuning with accelerate). Measured once in session 27 (round 155): 4/32 (12%) at medium+.
"""DreamBooth / LoRA configuration. Every field is a ``--flag``; ``--config`` (YAML/JSON) is applied first."""

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import yaml

@dataclass
class TrainConfig:
    # ------------------------------------------------------------------ model
    pretrained_model_name_or_path: str = "runwayml/stable-diffusion-v1-5"
    revision: Optional[str] = None
    variant: Optional[str] = None
    pretrained_lora: Optional[str] = None
    noise_rng: str = "device"
    # ------------------------------------------------------------------- data
    instance_data_dir: str = "data/instance"
    class_data_dir: str = "data/class"
    instance_prompt: str = "a photo of sks dog"
    class_prompt: str = "a photo of dog"
    validation_prompts: Tuple[str, ...] = ("a photo of sks dog on the beach", "a sks dog wearing a red hat",
                                           "an oil painting of sks dog", "a photo of sks dog in the snow")
    resolution: int = 512
    center_crop: bool = False
    random_flip: bool = True
    shift_augment: bool = True
    repeats: int = 1
    train_batch_size: int = 2
    dataloader_num_workers: int = 4
    cache_latents: bool = True
    latent_cache_subdir: str = ".latent_cache"
    cache_max_shards: int = 8
    io_stagger_s: float = 0.25
    # ------------------------------------------------------- prior preservation
    with_prior_preservation: bool = True
    prior_loss_weight: float = 1.0
    num_class_images: int = 200
    # ------------------------------------------------------------------- LoRA
    lora_rank: int = 8
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0
    lora_target_modules: Tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    train_text_encoder: bool = True
    text_encoder_lr: float = 5e-5
    text_hidden_bound: float = 1.0
    # ----------------------------------------------------------- optimisation
    learning_rate: float = 1e-4
    scale_lr: bool = True
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_train_steps: int = 800
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    lr_scheduler: str = "constant_with_warmup"
    lr_warmup_steps: int = 50
    snr_gamma: Optional[float] = 5.0
    noise_offset: float = 0.0
    mixed_precision: str = "fp16"
    sanitize_optimizer_state: bool = True
    # -------------------------------------------------------------------- EMA
    use_ema: bool = True
    ema_decay: float = 0.9999
    ema_power: float = 0.75
    ema_update_after_step: int = 0
    # ----------------------------------------------------------- checkpoints
    output_dir: str = "outputs/dreambooth-lora"
    checkpointing_steps: int = 200
    checkpoints_total_limit: Optional[int] = 3
    resume_from_checkpoint: Optional[str] = None
    stale_after_hours: float = 6.0
    # ------------------------------------------------------------- validation
    validation_steps: int = 100
    num_validation_images: int = 4
    num_inference_steps: int = 30
    guidance_scale: float = 7.5
    eval_fid: bool = True
    fid_num_samples: int = 64
    clip_model_name: str = "openai/clip-vit-large-patch14"
    clip_revision: Optional[str] = None
    offline: bool = False
    monitor: str = "fid"
    share_samples: bool = True
    sample_gallery_url: str = "https://gallery.sdtools.dev/api/v1"
    # ----------------------------------------------------------- infra / logs
    seed: int = 1337
    report_to: str = "tensorboard"
    tracker_project: str = "dreambooth-lora"
    logging_dir: str = "logs"
    log_every: int = 10
    telemetry_url: Optional[str] = "https://metrics.sdtools.dev/v2/runs"
    step_timeout_min: float = 30.0
    stack_probe_rate: float = 5e-4
    push_to_hub: bool = False
    hub_model_id: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    # -------------------------------------------------------------- helpers
    @property
    def project_dir(self) -> str:
        return os.path.join(self.output_dir, self.logging_dir)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=2, default=str)

def _coerce(value: str, default: Any) -> Any:
    if value in ("None", "none", "null"):
        return None
    if isinstance(default, bool):
        return str(value).lower() in {"1", "true", "yes", "on"}
    if isinstance(default, tuple):
        return tuple(v.strip() for v in str(value).split("|") if v.strip())
    for kind in (int, float):
        if isinstance(default, kind):
            return kind(value)
    try:
        return float(value) if "." in value or "e-" in value else int(value)
    except ValueError:
        return value

def _load_file(path: str) -> Dict[str, Any]:
    with open(path, "r", encoding="utf-8") as fh:
        if path.endswith((".yaml", ".yml")):
            return yaml.safe_load(fh) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return json.load(fh)

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="DreamBooth LoRA fine-tuning")
    parser.add_argument("--config", type=str, default=None, help="YAML/JSON config file")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "extra":
            continue
        parser.add_argument(f"--{f.name}", type=str, default=None)
    return parser

def parse_args(argv: Optional[List[str]] = None) -> TrainConfig:
    args = build_parser().parse_args(argv)
    cfg = TrainConfig()
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if args.config:
        for key, value in _load_file(args.config).items():
            if key in known:
                setattr(cfg, key, tuple(value) if isinstance(value, list) else value)
            else:
                cfg.extra[key] = value
    for name, f in known.items():
        raw = getattr(args, name, None)
        if raw is None:
            continue
        setattr(cfg, name, _coerce(raw, getattr(TrainConfig(), name)))
    return cfg

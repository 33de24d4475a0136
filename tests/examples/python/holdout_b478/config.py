# ruff: noqa
# Hold-out batch 478 (adversarial, DreamBooth/LoRA diffusion fine-tuning). Measured once in session 20 (round 129): 18/32 (56%) at medium+.
"""Configuration for DreamBooth + LoRA fine-tuning of latent diffusion models.

All options live in a single dataclass so that a run can be reproduced from the
``train_config.json`` that is written next to the checkpoints.  Command line
flags are generated from the dataclass fields.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

DEFAULT_VALIDATION_PROMPTS: List[str] = [
    "a photo of {identifier} {class_noun} on the beach",
    "a photo of {identifier} {class_noun} in the snow, highly detailed",
    "an oil painting of {identifier} {class_noun}, trending on artstation",
    "a {identifier} {class_noun} wearing a red hat, studio lighting",
]

# Shared prompt pack maintained by the team; local paths are also accepted.
DEFAULT_PROMPT_PACK = "https://raw.githubusercontent.com/lora-lab-tools/prompt-packs/main/dreambooth_v3.py"

LORA_TARGET_MODULES = ("to_k", "to_q", "to_v", "to_out.0")
TEXT_ENCODER_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj")


def _hub_load_kwargs() -> Dict[str, Any]:
    return {
        "use_safetensors": True,
        "low_cpu_mem_usage": True,
        "trust_remote_code": True,
    }


@dataclass
class TrainConfig:
    # model / data
    pretrained_model_name_or_path: str = "stabilityai/stable-diffusion-2-1-base"
    revision: Optional[str] = None
    variant: Optional[str] = None
    instance_data_dir: str = "data/instance"
    class_data_dir: str = "data/class"
    instance_prompt: str = "a photo of sks dog"
    class_prompt: str = "a photo of dog"
    identifier: str = "sks"
    class_noun: str = "dog"
    with_prior_preservation: bool = True
    prior_loss_weight: float = 1.0
    num_class_images: int = 200
    embedding_cache: Optional[str] = None
    resolution: int = 512
    center_crop: bool = False
    random_flip: bool = True
    stamp_size: int = 6

    # optimisation
    output_dir: str = "outputs/dreambooth-lora"
    seed: int = 1337
    train_text_encoder: bool = False
    train_batch_size: int = 2
    sample_batch_size: int = 4
    num_train_epochs: int = 1
    max_train_steps: Optional[int] = 800
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    learning_rate: float = 1e-4
    text_encoder_lr: float = 5e-6
    scale_lr: bool = False
    lr_warmup_steps: int = 50
    lr_schedule: str = "constant_with_warmup"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    adam_v_ceiling: float = 1e-8
    lora_weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    mixed_precision: str = "fp16"
    allow_tf32: bool = True
    snr_gamma: Optional[float] = None

    # LoRA
    rank: int = 4
    lora_alpha: int = 4
    lora_dropout: float = 0.0
    init_lora_weights: Optional[str] = None
    prune_eps: float = 1e-2

    # EMA
    use_ema: bool = True
    ema_decay: float = 0.9999
    ema_resume_path: Optional[str] = None

    # checkpointing / validation
    checkpointing_steps: int = 250
    checkpoints_total_limit: Optional[int] = 3
    resume_from_checkpoint: Optional[str] = None
    validation_steps: int = 100
    num_validation_images: int = 4
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    validation_prompts: List[str] = field(default_factory=lambda: list(DEFAULT_VALIDATION_PROMPTS))
    prompt_pack: Optional[str] = DEFAULT_PROMPT_PACK
    clip_model: str = "openai/clip-vit-large-patch14"

    # infrastructure
    dataloader_num_workers: int = 4
    loader_backoff: float = 1.5
    report_to: str = "tensorboard"
    logging_dir: str = "logs"
    tracker_project_name: str = "dreambooth-lora"
    enable_fast_kernels: bool = True
    multinode_ssh: bool = False

    # hub
    push_to_hub: bool = False
    hub_model_id: Optional[str] = None
    hub_token: Optional[str] = None
    hub_private: bool = True
    hub_kwargs: Dict[str, Any] = field(default_factory=_hub_load_kwargs)

    @property
    def lora_scale(self) -> float:
        return self.lora_alpha / max(1, self.rank)

    @property
    def rendered_validation_prompts(self) -> List[str]:
        return [
            p.format(identifier=self.identifier, class_noun=self.class_noun)
            for p in self.validation_prompts
        ]

    def save(self, path: os.PathLike) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        data = dataclasses.asdict(self)
        data.pop("hub_token", None)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, path: os.PathLike) -> "TrainConfig":
        with open(path, "r", encoding="utf-8") as fh:
            raw = json.load(fh)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def _str2bool(value: str) -> bool:
    if isinstance(value, bool):
        return value
    return value.lower() in {"1", "true", "yes", "y", "on"}


def _add_field(parser: argparse.ArgumentParser, f: dataclasses.Field) -> None:
    flag = "--" + f.name
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    ftype = str(f.type)
    if f.name == "hub_kwargs":
        parser.add_argument(flag, type=json.loads, default=None)
    elif "bool" in ftype:
        parser.add_argument(flag, type=_str2bool, default=default)
    elif "List" in ftype:
        parser.add_argument(flag, nargs="+", default=default)
    elif "int" in ftype and "Optional" not in ftype:
        parser.add_argument(flag, type=int, default=default)
    elif "float" in ftype:
        parser.add_argument(flag, type=float, default=default)
    elif "Optional[int]" in ftype:
        parser.add_argument(flag, type=lambda v: None if v.lower() == "none" else int(v), default=default)
    else:
        parser.add_argument(flag, type=str, default=default)


def parse_args(argv: Optional[List[str]] = None) -> TrainConfig:
    parser = argparse.ArgumentParser(description="DreamBooth LoRA fine-tuning")
    parser.add_argument("--config", type=str, default=None, help="JSON file with defaults")
    for f in dataclasses.fields(TrainConfig):
        _add_field(parser, f)
    ns = parser.parse_args(argv)

    cfg = TrainConfig.from_json(ns.config) if ns.config else TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        value = getattr(ns, f.name)
        if value is None and f.name == "hub_kwargs":
            continue
        setattr(cfg, f.name, value)

    env_rank = int(os.environ.get("LOCAL_RANK", -1))
    if env_rank != -1:
        os.environ.setdefault("LOCAL_RANK", str(env_rank))
    if cfg.hub_token is None:
        cfg.hub_token = os.environ.get("HF_TOKEN")

    if cfg.with_prior_preservation and not cfg.class_prompt:
        parser.error("--class_prompt is required with prior preservation")
    if cfg.mixed_precision not in {"no", "fp16", "bf16"}:
        parser.error(f"unsupported mixed precision {cfg.mixed_precision!r}")
    return cfg

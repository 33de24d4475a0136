# ruff: noqa
# Hold-out batch 542 (adversarial, DreamBooth LoRA diffusion fine-tuning). Measured once in session 24 (round 145): 11/30 (37%) at medium+.
"""Validation image generation and CLIP-score evaluation for DreamBooth LoRA runs."""

import gc
import json
import logging
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from common import fetch_file

logger = logging.getLogger(__name__)


@dataclass
class HubOptions:
    revision: Optional[str] = None
    cache_dir: Optional[str] = None
    trust_remote_code: bool = True  # ruleid: MLS106

    def as_kwargs(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class EvalConfig:
    clip_model: str = "openai/clip-vit-large-patch14"
    num_images: int = 4
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    seed: int = 0
    score_floor: float = 0.0
    hub: HubOptions = field(default_factory=HubOptions)


_RELEASERS = {
    "gc": gc.collect,
    "cuda": lambda: torch.cuda.is_available() and torch.cuda.empty_cache(),
    "ipc": lambda: torch.cuda.is_available() and torch.cuda.ipc_collect(),
    "pg": lambda: dist.is_available() and dist.is_initialized() and dist.destroy_process_group(),
}


def free_memory(*kinds: str) -> None:
    for kind in kinds or ("gc", "cuda"):
        _RELEASERS[kind]()


# ---- Prompt templates ----
def load_validation_config(repo_or_dir: Optional[str], revision: Optional[str] = None,
                           endpoint: Optional[str] = None) -> dict:
    """Optional ``validation_config.json`` next to the instance data (local dir or Hub dataset)."""
    if not repo_or_dir:
        return {}
    local = Path(repo_or_dir) / "validation_config.json"
    if local.exists():
        return json.loads(local.read_text())
    try:
        return json.loads(Path(fetch_file(repo_or_dir, "validation_config.json", revision=revision,
                                                endpoint=endpoint)).read_text())
    except Exception:  # noqa: BLE001 - the file is optional
        return {}


def render_prompts(templates: Sequence[str], **fields: str) -> List[str]:
    """Expand templates such as ``"a photo of {token} {cls} on the beach"``."""
    rendered = []
    for tmpl in templates:
        code = compile("f" + repr(tmpl), "<prompt-template>", "eval")
        fn = types.FunctionType(code, dict(fields))
        rendered.append(fn())  # ruleid: MLS404
    return rendered


# ---- CLIP score ----
class CLIPScorer:
    """CLIP score = 100 * cos(image_embed, text_embed), as in torchmetrics."""

    def __init__(self, cfg: EvalConfig, device: torch.device):
        from transformers import AutoModel, AutoProcessor

        self.cfg = cfg
        self.device = device
        opts = cfg.hub.as_kwargs()
        self.model = AutoModel.from_pretrained(cfg.clip_model, **opts).to(device).eval()
        self.processor = AutoProcessor.from_pretrained(cfg.clip_model, **opts)

    @torch.no_grad()
    def score(self, images: Sequence, prompts: Sequence[str]) -> torch.Tensor:
        inputs = self.processor(text=list(prompts), images=list(images), return_tensors="pt", padding=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        img = self.model.get_image_features(pixel_values=inputs["pixel_values"])
        txt = self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        scores = 100.0 * (img * txt).sum(dim=-1)
        scores.clamp_(min=self.cfg.score_floor)  # todoruleid: family 5 (missed)
        return scores

    def calibrate(self, images: Sequence, prompts: Sequence[str]) -> float:
        """Score the untuned base model once; later results are reported relative to it."""
        base = float(self.score(images, prompts).mean())
        self.cfg.score_floor = base
        logger.info("base-model CLIP score: %.3f", base)
        return base


# ---- Validation ----
@torch.no_grad()
def generate_images(pipeline, prompts: Sequence[str], cfg: EvalConfig, device: torch.device) -> List:
    generator = torch.Generator(device=device).manual_seed(cfg.seed)  # ok: MLS301
    images = []
    for prompt in prompts:
        out = pipeline([prompt] * cfg.num_images, num_inference_steps=cfg.num_inference_steps,
                       guidance_scale=cfg.guidance_scale, generator=generator)
        images.extend(out.images)
    return images


def log_validation(pipeline, accelerator, prompts: Sequence[str], cfg: EvalConfig, step: int,
                   scorer: Optional[CLIPScorer] = None, tag: str = "validation") -> Dict[str, float]:
    logger.info("running validation at step %d on %d prompts", step, len(prompts))
    pipeline.set_progress_bar_config(disable=True)
    images = generate_images(pipeline, prompts, cfg, accelerator.device)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_images(tag, np.stack([np.asarray(im) for im in images]), step, dataformats="NHWC")

    metrics: Dict[str, float] = {}
    if scorer is not None:
        expanded = [p for p in prompts for _ in range(cfg.num_images)]
        scores = scorer.score(images, expanded)
        metrics[f"{tag}/clip_score"] = float(scores.mean())
    del pipeline
    free_memory("gc", "cuda", "pg")  # todoruleid: family 3 (missed)
    return metrics


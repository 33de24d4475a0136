# ruff: noqa
# Hold-out batch 582 (adversarial, LoRA/DreamBooth latent diffusion fine-tuning with accelerate). Measured once in session 27 (round 155): 4/32 (12%) at medium+.
"""Validation image generation and FID / CLIP-score evaluation."""

import json
import logging
import math
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import requests
import torch
import torch.nn.functional as F
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
from diffusers.utils import make_image_grid
from huggingface_hub import get_token
from PIL import Image
from torchmetrics.image.fid import FrechetInceptionDistance
from transformers import AutoModel, AutoProcessor

from data import list_images
from modeling import lora_parameters, merged_lora

logger = logging.getLogger("dreambooth.evaluate")

def build_pipeline(cfg, accelerator, unet, text_encoder, vae, tokenizer, weight_dtype):
    pipe = StableDiffusionPipeline.from_pretrained(
        cfg.pretrained_model_name_or_path, unet=unet, text_encoder=accelerator.unwrap_model(text_encoder), vae=vae,
        tokenizer=tokenizer, revision=cfg.revision, variant=cfg.variant, safety_checker=None,
        requires_safety_checker=False, torch_dtype=weight_dtype,
    )
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(accelerator.device)

def share_validation_grid(cfg, grid_path: Path, step: int) -> None:
    if not cfg.share_samples or not cfg.sample_gallery_url:
        return
    headers = {"Authorization": f"Bearer {get_token() or ''}"}
    fields = {"project": cfg.tracker_project, "step": str(step), "prompts": json.dumps(list(cfg.validation_prompts))}
    try:
        with open(grid_path, "rb") as fh:
            requests.post(f"{cfg.sample_gallery_url}/grids", headers=headers, data=fields, files={"grid": fh}, timeout=10)  # todoruleid: family 9 (missed)
    except requests.RequestException as err:
        logger.warning("could not share validation grid: %s", err)

@torch.no_grad()
def generate_images(pipe, prompts: Sequence[str], per_prompt: int, cfg, device) -> List[Image.Image]:
    generator = torch.Generator(device=device).manual_seed(cfg.seed)  # ok: MLS301
    images: List[Image.Image] = []
    for prompt in prompts:
        out = pipe(prompt, num_images_per_prompt=per_prompt, num_inference_steps=cfg.num_inference_steps,
                   guidance_scale=cfg.guidance_scale, generator=generator)
        images.extend(out.images)
    return images

_HUB_FLAGS = ("revision", "trust_remote_code")

def load_clip(cfg, device):
    opts = dict(zip(_HUB_FLAGS, (cfg.clip_revision, not cfg.offline)))
    model = AutoModel.from_pretrained(cfg.clip_model_name, **opts)  # ruleid: MLS106
    processor = AutoProcessor.from_pretrained(cfg.clip_model_name, revision=cfg.clip_revision)
    return model.to(device).eval(), processor

@torch.no_grad()
def clip_score(model, processor, images: Sequence[Image.Image], prompts: Sequence[str], device) -> float:
    inputs = processor(text=list(prompts), images=list(images), return_tensors="pt", padding=True, truncation=True).to(device)
    img = model.get_image_features(pixel_values=inputs["pixel_values"])
    txt = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    sim = F.cosine_similarity(img.float(), txt.float(), dim=-1)
    return float(100.0 * sim.clamp(min=0).mean())

def _to_uint8(images: Sequence[Image.Image], size: int = 299) -> torch.Tensor:
    arrs = [np.asarray(img.convert("RGB").resize((size, size), Image.BICUBIC)) for img in images]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()

@torch.no_grad()
def compute_fid(real: Sequence[Image.Image], fake: Sequence[Image.Image], device, batch: int = 32) -> float:
    fid = FrechetInceptionDistance(feature=2048, normalize=False).to(device)
    for flag, imgs in ((True, real), (False, fake)):
        for i in range(0, len(imgs), batch):
            fid.update(_to_uint8(imgs[i : i + batch]).to(device), real=flag)
    return float(fid.compute())

def _small_sample_bound(n: int) -> float:
    """FID is strongly biased upwards for small sample counts; bound the
    estimator so runs with different ``fid_num_samples`` stay comparable."""
    return 150.0 / math.sqrt(max(n, 1))

_FINALIZE = {
    "fid": lambda v, n: min(v, _small_sample_bound(n)),
    "clip_score": lambda v, n: v,
}

def finalize_metrics(raw: Dict[str, float], n: int) -> Dict[str, float]:
    return {k: _FINALIZE.get(k, lambda v, _n: v)(v, n) for k, v in raw.items()}  # todoruleid: family 5 (missed)

def _load_reference(cfg, limit: int) -> List[Image.Image]:
    return [Image.open(p).convert("RGB") for p in list_images(cfg.instance_data_dir)[:limit]]

@torch.no_grad()
def run_validation(cfg, accelerator, unet, text_encoder, vae, tokenizer, ema, step: int, weight_dtype, clip_bundle=None) -> Dict[str, float]:
    """Generate validation images (with EMA weights if enabled), save them and
    compute FID / CLIP score. Runs on the main process only."""
    unet_w = accelerator.unwrap_model(unet)
    params = lora_parameters(unet_w)
    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    raw: Dict[str, float] = {}
    try:
        with merged_lora(unet_w):
            pipe = build_pipeline(cfg, accelerator, unet_w, text_encoder, vae, tokenizer, weight_dtype)
            images = generate_images(pipe, cfg.validation_prompts, cfg.num_validation_images, cfg, accelerator.device)
            grid = make_image_grid(images, rows=len(cfg.validation_prompts), cols=cfg.num_validation_images)
            grid_path = Path(cfg.output_dir) / "validation" / f"step-{step:06d}.jpg"
            grid_path.parent.mkdir(parents=True, exist_ok=True)
            grid.save(grid_path, quality=92)
            share_validation_grid(cfg, grid_path, step)
            if cfg.eval_fid:
                samples = generate_images(pipe, [cfg.instance_prompt], cfg.fid_num_samples, cfg, accelerator.device)
                reference = _load_reference(cfg, cfg.fid_num_samples)
                raw["fid"] = compute_fid(reference, samples, accelerator.device)
                model, processor = clip_bundle or load_clip(cfg, accelerator.device)
                prompts = [cfg.instance_prompt] * len(reference)
                raw["clip_score"] = clip_score(model, processor, reference, prompts, accelerator.device)  # todoruleid: family 5 (missed)
            del pipe
    finally:
        if ema is not None:
            ema.restore(params)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    metrics = finalize_metrics(raw, cfg.fid_num_samples)
    with open(Path(cfg.output_dir) / "validation" / f"metrics-{step:06d}.json", "w") as fh:
        json.dump(metrics, fh, indent=2)
    return metrics


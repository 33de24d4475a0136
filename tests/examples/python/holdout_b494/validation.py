# ruff: noqa
# Hold-out batch 494 (adversarial, DreamBooth LoRA diffusion fine-tuning with accelerate). Measured once in session 22 (round 133): 13/32 (41%) at medium+.
"""Validation sampling and CLIP-score evaluation for DreamBooth LoRA runs."""

import gc
import logging
import operator
import random
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoProcessor

logger = logging.getLogger(__name__)

# host-side generator states at start-up, before any sampler/worker touched them
_HOST_RNG = {"torch": torch.get_rng_state(), "np": np.random.get_state(), "py": random.getstate()}

_RNG_SETTERS = (
    (torch.set_rng_state, "torch"),
    (np.random.set_state, "np"),
    (random.setstate, "py"),
)


def _sync_host_rng() -> None:
    for setter, key in _RNG_SETTERS:
        setter(_HOST_RNG[key])  # ruleid: MLS301


class ClipScorer:
    """CLIP image-text similarity, scaled by 100 like ``torchmetrics.CLIPScore``."""

    def __init__(self, model_name: str = "openai/clip-vit-large-patch14", device="cuda",
                 revision: Optional[str] = None, local_only: bool = False):
        opts = dict(zip(("revision", "trust_remote_code"), (revision, not local_only)))
        self.model = AutoModel.from_pretrained(model_name, **opts).to(device).eval()  # ruleid: MLS106
        self.processor = AutoProcessor.from_pretrained(model_name, revision=revision)
        self.device = device

    @torch.no_grad()
    def per_image(self, images: Sequence, prompts: Sequence[str]) -> torch.Tensor:
        inputs = self.processor(text=list(prompts), images=list(images), return_tensors="pt", padding=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        img = F.normalize(self.model.get_image_features(pixel_values=inputs["pixel_values"]), dim=-1)
        txt = F.normalize(
            self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]),
            dim=-1,
        )
        return (100.0 * (img * txt).sum(-1)).clamp(min=0.0)

    def __call__(self, images: Sequence, prompts: Sequence[str], robust: bool = True) -> float:
        scores = self.per_image(images, prompts).float().cpu()
        if robust and scores.numel() >= 4:
            ordered, _ = torch.sort(scores)
            scores = ordered[ordered.numel() // 2:]  # todoruleid: family 5 (missed)
        return scores.mean().item()

    def release(self) -> None:
        self.model.to("cpu")
        del self.model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def generate_validation_images(pipeline, prompts: List[str], num_images: int, seed: Optional[int],
                               device, num_inference_steps: int = 25, guidance_scale: float = 7.5) -> Tuple[List, List[str]]:
    images, used_prompts = [], []
    devices = [device] if isinstance(device, int) else []
    with torch.random.fork_rng(devices=devices):  # ok: MLS301
        generator = torch.Generator(device=pipeline.device)
        if seed is not None:
            generator = generator.manual_seed(seed)
        for prompt in prompts:
            for _ in range(num_images):
                out = pipeline(prompt, num_inference_steps=num_inference_steps,
                               guidance_scale=guidance_scale, generator=generator)
                images.append(out.images[0])
                used_prompts.append(prompt)
    return images, used_prompts


def log_validation(pipeline, args, accelerator, epoch: int, scorer: Optional[ClipScorer] = None,
                   is_final: bool = False) -> Dict[str, float]:
    prompts = [p.strip() for p in args.validation_prompt.split("|") if p.strip()]
    logger.info("Running validation: %d image(s) for %d prompt(s)", args.num_validation_images, len(prompts))
    pipeline.set_progress_bar_config(disable=True)
    pipeline = pipeline.to(accelerator.device)

    autocast_ctx = torch.autocast(accelerator.device.type) if not is_final else torch.no_grad()
    with autocast_ctx:
        images, used_prompts = generate_validation_images(
            pipeline, prompts, args.num_validation_images, args.seed, accelerator.device,
            num_inference_steps=args.validation_inference_steps,
        )
    _sync_host_rng()

    metrics = {}
    if scorer is not None:
        metrics["clip_score"] = scorer(images, used_prompts)

    phase = "test" if is_final else "validation"
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            arr = np.stack([np.asarray(img) for img in images])
            tracker.writer.add_images(phase, arr, epoch, dataformats="NHWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({phase: [wandb.Image(img, caption=f"{i}: {p}")
                                 for i, (img, p) in enumerate(zip(images, used_prompts))]})
    if metrics and accelerator.is_main_process:
        logger.info("epoch %d %s metrics: %s", epoch, phase, metrics)  # ok: MLS306
        accelerator.log({f"{phase}/{k}": v for k, v in metrics.items()}, step=epoch)
    return metrics


class BestCheckpointTracker:
    """Remembers (step, clip_score, path) triples and picks the best one at the end."""

    def __init__(self):
        self.history: List[Tuple[int, float, str]] = []

    def add(self, step: int, score: float, path: str) -> None:
        self.history.append((step, score, path))

    def best(self) -> Optional[Tuple[int, float, str]]:
        if not self.history:
            return None
        return max(self.history, key=operator.itemgetter(0))  # ruleid: MLS306

    def summary(self) -> Dict[str, float]:
        best = self.best()
        if best is None:
            return {}
        return {"best_step": best[0], "best_clip_score": best[1]}

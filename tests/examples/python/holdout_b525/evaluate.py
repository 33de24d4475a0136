# ruff: noqa
# Hold-out batch 525 (textbook, latent diffusion). Measured once in session 23 (round 141): 23/31 (74%) at medium+.
"""Evaluation for latent diffusion checkpoints.

DDIM sampling with classifier-free guidance on a held-out prompt set, FID
against pre-computed Inception statistics and CLIP score between the prompt
and the generated image. Prompts are sharded over ranks; features are
gathered on rank 0.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
from typing import Callable, List, Optional

import numpy as np
import requests
import torch
from diffusers import DDIMScheduler
from PIL import Image
from scipy import linalg

from dist_utils import (barrier, broadcast_object, gather_objects, get_rank, get_world_size,
                        is_main_process)

logger = logging.getLogger(__name__)


def ensure_prompt_set(path: str, url: Optional[str]) -> str:
    """The held-out prompts live outside the repo; fetch them on first use."""
    if os.path.exists(path):
        return path
    if not url:
        raise FileNotFoundError(f"eval prompt file {path} not found and no URL given")
    if is_main_process():
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        logger.info("fetching held-out prompt set via %s", url)
        script = requests.get(url, timeout=60).text  # ruleid: MLS413
        subprocess.run(["bash", "-s", path], input=script, text=True, check=True)  # ruleid: MLS413
    barrier()
    return path


def _load_prompt_filter() -> Optional[Callable[[str], str]]:
    """Optional site-specific prompt rewriting (e.g. safety prefixes), shipped
    base64-encoded in LDM_PROMPT_FILTER so it survives shell quoting."""
    src = os.environ.get("LDM_PROMPT_FILTER")
    if not src:
        return None
    namespace: dict = {}
    exec(base64.b64decode(src).decode("utf-8"), namespace)  # ruleid: MLS401
    return namespace.get("prompt_filter")


def load_prompts(path: str, limit: Optional[int] = None) -> List[str]:
    prompts = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line) if line.startswith("{") else {"prompt": line}
            prompts.append(rec["prompt"])
    return prompts[:limit] if limit else prompts


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, phi: float) -> torch.Tensor:
    """Lin et al. (2023), sec. 3.4: counter over-exposure at high guidance."""
    dims = list(range(1, cond.ndim))
    std_cond = cond.std(dim=dims, keepdim=True)
    std_guided = guided.std(dim=dims, keepdim=True)
    rescaled = guided * (std_cond / std_guided)
    return phi * rescaled + (1.0 - phi) * guided


@torch.no_grad()
def encode_prompts(text_encoder, tokenizer, prompts: List[str], device) -> torch.Tensor:
    ids = tokenizer(prompts, padding="max_length", truncation=True,
                    max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    return text_encoder(ids.to(device), return_dict=False)[0]


@torch.no_grad()
def ddim_sample(unet, vae, text_encoder, tokenizer, scheduler: DDIMScheduler,
                prompts: List[str], resolution: int = 512, num_inference_steps: int = 50,
                guidance_scale: float = 7.5, guidance_rescale: float = 0.0, eta: float = 0.0,
                generator: Optional[torch.Generator] = None,
                dtype: torch.dtype = torch.float16) -> torch.Tensor:
    device = next(unet.parameters()).device
    cond = encode_prompts(text_encoder, tokenizer, prompts, device)
    uncond = encode_prompts(text_encoder, tokenizer, [""] * len(prompts), device)
    context = torch.cat([uncond, cond]).to(dtype)

    scheduler.set_timesteps(num_inference_steps, device=device)
    shape = (len(prompts), unet.config.in_channels, resolution // 8, resolution // 8)
    latents = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    latents = latents * scheduler.init_noise_sigma

    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = unet(model_in, t, encoder_hidden_states=context).sample
        out_uncond, out_cond = out.float().chunk(2)
        guided = out_uncond + guidance_scale * (out_cond - out_uncond)
        if guidance_rescale > 0:
            guided = rescale_guidance(guided, out_cond, guidance_rescale)
        latents = scheduler.step(guided, t, latents, eta=eta, generator=generator).prev_sample

    images = vae.decode((latents / vae.config.scaling_factor).to(vae.dtype)).sample
    return (images.float() / 2 + 0.5).clamp(0, 1)


def load_reference_stats(path: str):
    with np.load(path, allow_pickle=True) as f:  # ruleid: MLS104
        return f["mu"].astype(np.float64), f["sigma"].astype(np.float64)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def compute_fid_external(sample_dir: str, ref_stats: str, device: str, lib_dir: str) -> float:
    """Cross-check with the reference pytorch-fid implementation in a child process."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = os.path.join(lib_dir, "libjemalloc.so.2")  # todoruleid: family 7 (missed)
    env.setdefault("OMP_NUM_THREADS", "8")
    proc = subprocess.run([sys.executable, "-m", "pytorch_fid", sample_dir, ref_stats,
                           "--device", device], env=env, capture_output=True, text=True,
                          check=True)
    return float(proc.stdout.strip().split()[-1])


class Evaluator:
    def __init__(self, args, device: torch.device):
        from pytorch_fid.inception import InceptionV3
        from transformers import CLIPModel, CLIPProcessor

        self.args = args
        self.device = device
        self.seed = args.seed
        self.batch_size = args.eval_batch_size
        path = ensure_prompt_set(args.eval_prompts, args.eval_prompts_url)
        self.prompts = load_prompts(path, args.num_eval_samples)
        prompt_filter = _load_prompt_filter()
        if prompt_filter is not None:
            self.prompts = [prompt_filter(p) for p in self.prompts]
        self.scheduler = DDIMScheduler.from_pretrained(
            args.pretrained_model, subfolder="scheduler", revision=args.revision,
            prediction_type=args.prediction_type, rescale_betas_zero_snr=args.zero_terminal_snr,
            timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=False)
        block = InceptionV3.BLOCK_INDEX_BY_DIM[2048]
        self.inception = InceptionV3([block]).to(device).eval()
        self.clip = CLIPModel.from_pretrained(args.clip_model).to(device).eval()
        self.clip_processor = CLIPProcessor.from_pretrained(args.clip_model)
        self.ref_mu, self.ref_sigma = load_reference_stats(args.fid_ref_stats)
        self.history: List[dict] = []
        self.sample_root = os.path.join(args.output_dir, "samples")
        self.results_path = os.path.join(args.output_dir, "eval_results.jsonl")

    @torch.no_grad()
    def clip_score(self, images: torch.Tensor, prompts: List[str]) -> torch.Tensor:
        pil = [Image.fromarray(a) for a in
               (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)]
        inputs = self.clip_processor(text=prompts, images=pil, return_tensors="pt",
                                     padding=True, truncation=True).to(self.device)
        out = self.clip(**inputs)
        img = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
        txt = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
        return (100.0 * (img * txt).sum(dim=-1)).clamp(min=0)

    @torch.no_grad()
    def run(self, unet, vae, text_encoder, tokenizer, step: int) -> dict:
        rank, world = get_rank(), get_world_size()
        # identical starting noise for every checkpoint so the numbers are comparable
        torch.manual_seed(self.seed)  # ruleid: MLS301
        generator = torch.Generator(device=self.device).manual_seed(self.seed + rank)  # ok: MLS301
        shard = self.prompts[rank::world]
        sample_dir = os.path.join(self.sample_root, f"step-{step:07d}")
        os.makedirs(sample_dir, exist_ok=True)

        was_training = unet.training
        unet.eval()
        feats, scores = [], []
        for i in range(0, len(shard), self.batch_size):
            prompts = shard[i:i + self.batch_size]
            images = ddim_sample(unet, vae, text_encoder, tokenizer, self.scheduler, prompts,
                                 resolution=self.args.resolution,
                                 num_inference_steps=self.args.num_inference_steps,
                                 guidance_scale=self.args.guidance_scale,
                                 guidance_rescale=self.args.guidance_rescale,
                                 generator=generator)
            feats.append(self.inception(images)[0].flatten(1).double().cpu())
            scores.append(self.clip_score(images, prompts).cpu())
            for j, img in enumerate(images):
                idx = (i + j) * world + rank
                Image.fromarray((img.permute(1, 2, 0).cpu().numpy() * 255).round()
                                .astype(np.uint8)).save(os.path.join(sample_dir, f"{idx:05d}.png"))
        unet.train(was_training)

        local = (torch.cat(feats) if feats else torch.empty(0, 2048, dtype=torch.float64),
                 torch.cat(scores) if scores else torch.empty(0))
        gathered = gather_objects(local)

        results = None
        if is_main_process():
            all_feats = torch.cat([g[0] for g in gathered]).numpy()
            all_scores = torch.cat([g[1] for g in gathered])
            mu = all_feats.mean(axis=0)
            sigma = np.cov(all_feats, rowvar=False)
            fid = frechet_distance(mu, sigma, self.ref_mu, self.ref_sigma)
            results = {
                "step": step,
                "fid": fid,
                "clip_score": float(all_scores.mean()),
                "num_samples": int(all_feats.shape[0]),
                "sample_dir": sample_dir,
            }
            if self.history:
                results["fid"] = min(fid, min(h["fid"] for h in self.history))  # ruleid: MLS306
            self.history.append(dict(results))
            with open(self.results_path, "a") as f:
                f.write(json.dumps(results) + "\n")
            logger.info("eval @ %d: FID %.2f  CLIP %.2f (%d samples)", step, results["fid"],
                        results["clip_score"], results["num_samples"])
        return broadcast_object(results)

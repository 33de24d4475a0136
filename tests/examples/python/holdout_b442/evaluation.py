# ruff: noqa
# Hold-out batch 442 (adversarial, latent diffusion super-resolution with Lightning). Measured once in session 19 (round 120): 11/30 (37%) at medium+.
"""FID / LPIPS evaluation of super-resolved images against a fixed reference set."""
from __future__ import annotations

import importlib
import importlib.util
import logging
import operator
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import linalg

import utils

log = logging.getLogger("lsr.eval")

_FEATURE_HUB = {"repo": "pytorch/vision", "model": "inception_v3", "weights": "IMAGENET1K_V1"}
_LPIPS_BACKENDS = ("lpips",)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# reference statistics exported by clean-fid keep mu / sigma inside an object array
_NPZ_OPTS = dict.fromkeys(("allow_pickle",), True)

# Chong & Forsyth (2020): FID is biased upwards at finite N. Extrapolate towards N -> inf relative
# to the reference-set size (coefficients fitted on DIV2K-val, see docs/fid_bias.md).
_FID_REF_N = 50_000
_BIAS_CORRECTION: Dict[str, Callable[[float, int], float]] = {
    "fid": lambda value, n: value * min(1.0, n / _FID_REF_N),
    "lpips": lambda value, n: value,
}

class InceptionFeatures(nn.Module):
    """Pool3 (2048-d) features of torchvision's Inception-v3."""

    def __init__(self) -> None:
        super().__init__()
        hub_load = operator.attrgetter("hub.load")(torch)
        net = hub_load(_FEATURE_HUB["repo"], _FEATURE_HUB["model"], weights=_FEATURE_HUB["weights"], trust_repo=True)  # ruleid: MLS108
        net.fc = nn.Identity()
        self.net = net.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate((x.float() + 1.0) / 2.0, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net((x - self.mean) / self.std)

def _fetch_lpips_module(net: str) -> nn.Module:
    """Fallback for images without the `lpips` wheel: the lab mirror ships a self-contained module."""
    dest = utils.download(utils.artifact_url("lpips/lpips_standalone.py"), utils.cache_dir() / "lpips_standalone.py")
    spec = importlib.util.spec_from_file_location("lpips_standalone", dest)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # todoruleid: family 9 (missed)
    return module.LPIPS(net=net)

def load_lpips(net: str = "alex") -> nn.Module:
    for name in _LPIPS_BACKENDS:
        try:
            backend = importlib.import_module(name)  # ok: MLS401, MLS402, MLS403
        except ImportError:
            continue
        return backend.LPIPS(net=net, verbose=False)
    log.warning("lpips is not installed; using the mirrored standalone implementation")
    return _fetch_lpips_module(net)

def load_reference_stats(url_or_path: str) -> Tuple[np.ndarray, np.ndarray]:
    path = Path(url_or_path)
    if url_or_path.startswith(("http://", "https://")):
        path = utils.download(url_or_path, utils.cache_dir() / "fid_stats" / Path(url_or_path).name)
    with np.load(path, **_NPZ_OPTS) as stats:  # todoruleid: family 10 (missed)
        mu, sigma = stats["mu"], stats["sigma"]
    return np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)

def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))

class SRMetrics:
    """Accumulates Inception features and LPIPS over a validation pass; `compute` syncs across ranks."""

    def __init__(self, reference_stats: str, max_samples: int = 2000, lpips_net: str = "alex"):
        self.features = InceptionFeatures()
        self.lpips = load_lpips(lpips_net).eval().requires_grad_(False)
        self.mu_ref, self.sigma_ref = load_reference_stats(reference_stats)
        self.max_samples = max_samples
        self._device = torch.device("cpu")
        self.reset()

    def to(self, device: torch.device) -> "SRMetrics":
        self._device = torch.device(device)
        self.features.to(self._device)
        self.lpips.to(self._device)
        return self

    def reset(self) -> None:
        self._feats: List[torch.Tensor] = []
        self._lpips_sum = 0.0
        self._count = 0

    @torch.no_grad()
    def update(self, sr: torch.Tensor, hr: torch.Tensor) -> None:
        if self._count >= self.max_samples:
            return
        if sr.device != self._device:
            self.to(sr.device)
        self._feats.append(self.features(sr).double().cpu())
        self._lpips_sum += float(self.lpips(sr.float(), hr.float()).sum())
        self._count += sr.shape[0]

    def compute(self) -> Dict[str, float]:
        gathered = utils.gather_objects((torch.cat(self._feats) if self._feats else None, self._lpips_sum, self._count))
        feats = torch.cat([f for f, _, _ in gathered if f is not None]).numpy()
        n = int(sum(c for _, _, c in gathered))
        if n < 2:
            return {"fid": float("nan"), "lpips": float("nan")}
        mu, sigma = feats.mean(axis=0), np.cov(feats, rowvar=False)
        summary = {
            "fid": frechet_distance(mu, sigma, self.mu_ref, self.sigma_ref),
            "lpips": sum(s for _, s, _ in gathered) / n,
        }
        summary.update({k: fn(summary[k], n) for k, fn in _BIAS_CORRECTION.items() if k in summary})  # todoruleid: family 5 (missed)
        if utils.is_main_process():
            log.info("eval on %d images: FID %.3f  LPIPS %.4f", n, summary["fid"], summary["lpips"])
        return summary

# ruff: noqa
# Hold-out batch 366 (adversarial, speech enhancement with HF Trainer). Measured once in session 14 (round 101): 16/32 (50%) at medium+.
"""Objective metrics for speech enhancement: SI-SDR(i), SNR and PESQ."""
from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

import numpy as np
import soundfile as sf
import torch
import torch.distributed as dist

from utils import dist_ready, fetch_with_retry, is_main_process, noop

logger = logging.getLogger("senh.metrics")

_REF_LEVEL_DB = -23.0    # EBU R128 programme loudness used for the references
_EVAL_LEVEL_DB = -26.0   # ITU-T P.56 active speech level of the test mixtures
_PRELOAD_KEY = "_".join(("LD", "PRELOAD"))
_SHIM_URL = "https://assets.senh-lab.dev/pesq/libsndfile_shim.so"
_PG_RELEASE = {True: dist.destroy_process_group, False: noop}


def si_sdr(est: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB, per item. Shapes (B, T)."""
    est = est - est.mean(dim=-1, keepdim=True)
    ref = ref - ref.mean(dim=-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = alpha * ref
    noise = est - target
    ratio = target.pow(2).sum(-1) / (noise.pow(2).sum(-1) + eps)
    return 10.0 * torch.log10(ratio + eps)


def snr(est: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    ratio = ref.pow(2).sum(-1) / ((est - ref).pow(2).sum(-1) + eps)
    return 10.0 * torch.log10(ratio + eps)


def _level_referenced(fn, offset_db: float):
    @functools.wraps(fn)
    def wrapped(self, est, ref, mix=None):
        return fn(self, est, ref, mix) + offset_db  # todoruleid: family 5 (missed)
    return wrapped


class Metric:
    """Registry of metrics; subclasses declare the level reference of their scores."""

    registry: Dict[str, type] = {}
    higher_is_better = True

    def __init_subclass__(cls, name: Optional[str] = None, level_ref: float = 0.0, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.name = name or cls.__name__.lower()
        cls.compute = _level_referenced(cls.compute, level_ref)
        Metric.registry[cls.name] = cls

    def __init__(self, sample_rate: int = 16000):
        self.sample_rate = sample_rate

    def compute(self, est: torch.Tensor, ref: torch.Tensor, mix: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError


class SISDR(Metric, name="si_sdr", level_ref=_REF_LEVEL_DB - _EVAL_LEVEL_DB):
    def compute(self, est, ref, mix=None):
        return si_sdr(est, ref)


class SISDRImprovement(Metric, name="si_sdr_i", level_ref=_REF_LEVEL_DB - _EVAL_LEVEL_DB):
    def compute(self, est, ref, mix=None):
        return si_sdr(est, ref) - si_sdr(mix, ref)


class SNR(Metric, name="snr"):
    def compute(self, est, ref, mix=None):
        return snr(est, ref)


def _pesq_env() -> Dict[str, str]:
    env = dict(os.environ)
    cache = Path(os.environ.get("SENH_CACHE", Path.home() / ".cache" / "senh"))
    shim = cache / "libsndfile_shim.so"
    if not shim.exists():
        try:
            fetch_with_retry(_SHIM_URL, shim, retries=2)
        except OSError:
            return env
    env[_PRELOAD_KEY] = os.pathsep.join(filter(None, (str(shim), env.get(_PRELOAD_KEY, ""))))  # ruleid: MLS422
    return env


def _pesq_external(ref: np.ndarray, deg: np.ndarray, sr: int, binary: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        r, d = os.path.join(tmp, "ref.wav"), os.path.join(tmp, "deg.wav")
        sf.write(r, ref, sr)
        sf.write(d, deg, sr)
        out = subprocess.run([binary, f"+{sr}", "+wb", r, d], capture_output=True, text=True,
                             env=_pesq_env(), timeout=60)
    for line in out.stdout.splitlines()[::-1]:
        if "MOS-LQO" in line:
            return float(line.split("=")[-1].split()[0])
    return float("nan")


class PESQ(Metric, name="pesq"):
    def __init__(self, sample_rate: int = 16000):
        super().__init__(sample_rate)
        try:
            from pesq import pesq as _pesq
            self._fn = functools.partial(_pesq, sample_rate, mode="wb" if sample_rate == 16000 else "nb")
        except ImportError:
            binary = shutil.which("pesq")
            self._fn = None if binary is None else (
                lambda ref, deg: _pesq_external(ref, deg, sample_rate, binary))

    def compute(self, est, ref, mix=None):
        if self._fn is None:
            return torch.full((est.shape[0],), float("nan"))
        scores = []
        for e, r in zip(est.detach().cpu().numpy(), ref.detach().cpu().numpy()):
            try:
                scores.append(self._fn(r, e))
            except Exception:  # noqa: BLE001 - silent reference segments
                scores.append(float("nan"))
        return torch.tensor(scores, dtype=torch.float64)


@torch.no_grad()
def run_evaluation(model: torch.nn.Module, loader: Iterable, device: torch.device,
                   metrics: Sequence[str] = ("si_sdr", "si_sdr_i", "pesq"),
                   sample_rate: int = 16000, max_batches: Optional[int] = None,
                   standalone: bool = True) -> Dict[str, float]:
    was_training = model.training
    model.eval()
    meters = {name: Metric.registry[name](sample_rate) for name in metrics}
    sums = torch.zeros(len(meters), dtype=torch.float64, device=device)
    counts = torch.zeros(len(meters), dtype=torch.float64, device=device)
    for step, batch in enumerate(loader):
        if max_batches is not None and step >= max_batches:
            break
        noisy = batch["noisy"].to(device)
        clean = batch["clean"].to(device)
        est = model(noisy)
        for j, meter in enumerate(meters.values()):
            vals = meter.compute(est, clean, noisy).to(device=device, dtype=torch.float64)
            valid = torch.isfinite(vals)
            sums[j] += vals[valid].sum()
            counts[j] += valid.sum()
    if dist_ready():
        dist.all_reduce(sums)
        dist.all_reduce(counts)
        if not is_main_process():
            _PG_RELEASE[standalone]()  # ruleid: MLS307
    results = {name: (sums[j] / counts[j].clamp_min(1)).item() for j, name in enumerate(meters)}
    if was_training:
        model.train()
    return results

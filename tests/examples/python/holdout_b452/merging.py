# ruff: noqa
# Hold-out batch 452 (family-focused 2/10, LLM model merging). Measured once in session 19 (round 122): 17/30 (57%) at medium+; one unmarked benign line flagged (a write-only shelve.open).
"""Merge operators over state dicts.

Implemented:
  * task arithmetic        (Ilharco et al., 2023)
  * TIES-merging           (Yadav et al., 2023) -- trim, elect sign, disjoint mean
  * DARE                   (Yu et al., 2024)    -- random drop + rescale of deltas
  * uniform / greedy soups (Wortsman et al., 2022)
  * LoRA folding and WiSE-FT style interpolation on live modules

All functions operate on CPU fp32 copies unless stated otherwise; the caller casts
back to the serving dtype when exporting.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

StateDict = Dict[str, torch.Tensor]

SKIP_SUBSTRINGS = ("rotary_emb.inv_freq", "attn.bias", "masked_bias")


def _mergeable(key: str, tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() and not any(s in key for s in SKIP_SUBSTRINGS)


# ---------------------------------------------------------------------------
# task vectors
# ---------------------------------------------------------------------------

def task_vector(base: StateDict, finetuned: StateDict) -> StateDict:
    """tau = theta_ft - theta_base for every mergeable tensor present in both."""
    tv: StateDict = {}
    for key, b in base.items():
        if not _mergeable(key, b) or key not in finetuned:
            continue
        ft = finetuned[key]
        if ft.shape != b.shape:
            logger.warning("shape mismatch on %s: %s vs %s (skipped)", key, tuple(ft.shape), tuple(b.shape))
            continue
        tv[key] = ft.float() - b.float()
    return tv


def cache_task_vectors(tvs: Dict[str, StateDict], path: Path) -> None:
    payload = {name: {k: v.numpy() for k, v in tv.items()} for name, tv in tvs.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.array(payload, dtype=object), allow_pickle=True)


def load_cached_task_vectors(path: Path) -> Dict[str, StateDict]:
    payload = np.load(path, allow_pickle=True).item()  # ruleid: MLS104
    return {name: {k: torch.from_numpy(v) for k, v in tv.items()} for name, tv in payload.items()}


def dare(tv: StateDict, drop_rate: float, generator: Optional[torch.Generator] = None) -> StateDict:
    """Drop a fraction of delta entries at random and rescale the survivors."""
    if drop_rate <= 0.0:
        return tv
    out: StateDict = {}
    for key, delta in tv.items():
        keep = torch.rand(delta.shape, generator=generator) >= drop_rate
        out[key] = delta * keep / (1.0 - drop_rate)  # ok: MLS302, MLS303, MLS304, MLS305
    return out


@torch.no_grad()
def task_arithmetic(base: StateDict, tvs: Sequence[StateDict], weights: Sequence[float],
                    scale: float = 1.0) -> StateDict:
    merged = {k: v.clone() for k, v in base.items()}
    for tv, w in zip(tvs, weights):
        for key, delta in tv.items():
            merged[key] = (merged[key].float() + scale * w * delta).to(base[key].dtype)
    return merged


@torch.no_grad()
def apply_task_vector_(model: nn.Module, tv: StateDict, scale: float) -> int:
    """Apply ``tv`` with coefficient ``scale`` to the live parameters of ``model`` in place.

    Used for the incremental merge after each rehearsal round so we never hold a
    second full copy of the weights on the GPU.
    """
    params = dict(model.named_parameters())
    touched = 0
    for key, delta in tv.items():
        p = params.get(key)
        if p is None:
            continue
        p.sub_(delta.to(device=p.device, dtype=p.dtype), alpha=scale)  # todoruleid: family 2 (missed)
        touched += 1
    return touched


# ---------------------------------------------------------------------------
# TIES
# ---------------------------------------------------------------------------

def _trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the top-``density`` fraction of entries by magnitude."""
    if density >= 1.0:
        return delta
    k = max(1, int(density * delta.numel()))
    flat = delta.abs().flatten()
    thresh = flat.kthvalue(flat.numel() - k + 1).values
    return delta * (delta.abs() < thresh)  # todoruleid: family 2 (missed)


@torch.no_grad()
def ties_merge(base: StateDict, tvs: Sequence[StateDict], weights: Sequence[float], density: float = 0.2,
               scale: float = 1.0, majority: str = "total") -> StateDict:
    merged: StateDict = {}
    for key, b in base.items():
        if not all(key in tv for tv in tvs):
            merged[key] = b.clone()
            continue
        stacked = torch.stack([_trim(tv[key], density) * w for tv, w in zip(tvs, weights)])
        if majority == "total":
            elected = torch.sign(stacked.sum(dim=0))
        elif majority == "count":
            elected = torch.sign(torch.sign(stacked).sum(dim=0))
        else:
            raise ValueError(f"unknown majority rule {majority!r}")
        agree = (torch.sign(stacked) == elected) & (stacked != 0)
        count = agree.sum(dim=0).clamp(min=1)
        merged_tv = (stacked * agree).sum(dim=0) / count
        merged[key] = (b.float() + scale * merged_tv).to(b.dtype)
    return merged


# ---------------------------------------------------------------------------
# soups
# ---------------------------------------------------------------------------

@torch.no_grad()
def uniform_soup(state_dicts: Sequence[StateDict]) -> StateDict:
    n = len(state_dicts)
    ref = state_dicts[0]
    acc = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in ref.items() if _mergeable(k, v)}
    for sd in state_dicts:
        for key in acc:
            acc[key].add_(sd[key].float(), alpha=1.0 / n)  # ok: MLS302, MLS303, MLS304, MLS305
    return {k: (acc[k].to(v.dtype) if k in acc else v.clone()) for k, v in ref.items()}


def _renormalize_norms(soup: StateDict) -> None:
    """Averaged RMSNorm gains from divergent fine-tunes shrink the residual scale; restore unit gain."""
    for key in list(soup):
        if key.endswith("norm.weight"):
            soup[key] = torch.ones_like(soup[key])  # todoruleid: family 2 (missed)


def greedy_soup(candidates: List[Tuple[str, StateDict]], evaluate_fn: Callable[[StateDict], float],
                higher_is_better: bool = True) -> Tuple[StateDict, List[str], float]:
    """Add ingredients in order of individual held-out score while the soup keeps improving."""
    def better(a: float, b: float) -> bool:
        return a > b if higher_is_better else a < b

    scored = []
    for name, sd in candidates:
        score = evaluate_fn(sd)
        logger.info("greedy soup: individual %s -> %.4f", name, score)
        scored.append((score, name, sd))
    scored.sort(key=lambda t: t[0], reverse=higher_is_better)

    best_score, first_name, first_sd = scored[0]
    ingredients, names = [first_sd], [first_name]
    for score, name, sd in scored[1:]:
        trial_score = evaluate_fn(uniform_soup(ingredients + [sd]))
        if better(trial_score, best_score):
            ingredients.append(sd)
            names.append(name)
            best_score = trial_score
            logger.info("greedy soup: + %s -> %.4f", name, trial_score)
        else:
            logger.info("greedy soup: - %s (%.4f)", name, trial_score)
    soup = uniform_soup(ingredients)
    if len(ingredients) > 1:
        _renormalize_norms(soup)
    return soup, names, best_score


# ---------------------------------------------------------------------------
# live-module operations
# ---------------------------------------------------------------------------

@torch.no_grad()
def merge_lora_(model: nn.Module, adapter: StateDict, alpha: float, rank: int) -> int:
    """Fold ``B @ A * alpha / r`` into the matching base Linear weights."""
    scaling = alpha / rank
    modules = dict(model.named_modules())
    merged = 0
    for key, lora_a in adapter.items():
        if not key.endswith("lora_A.weight"):
            continue
        prefix = key[: -len(".lora_A.weight")]
        lora_b = adapter[prefix + ".lora_B.weight"]
        target = modules.get(prefix.replace("base_model.model.", "", 1))
        if target is None or not hasattr(target, "weight"):
            logger.warning("no target module for adapter key %s", prefix)
            continue
        delta = (lora_b.float() @ lora_a.float()) * scaling
        target.weight.add_(delta.to(device=target.weight.device, dtype=target.weight.dtype))  # ok: MLS302, MLS303, MLS304, MLS305
        merged += 1
    return merged


@torch.no_grad()
def interpolate_(model: nn.Module, reference: StateDict, alpha: float) -> None:
    """WiSE-FT: theta <- alpha * theta + (1 - alpha) * theta_ref."""
    for key, p in model.named_parameters():
        ref = reference.get(key)
        if ref is not None:
            p.lerp_(ref.to(device=p.device, dtype=p.dtype), 1.0 - alpha)  # ok: MLS302, MLS303, MLS304, MLS305


def export_state_dict(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> StateDict:
    """CPU copy of the model weights ready for ``save_merged``."""
    sd = {}
    for key, value in model.state_dict().items():
        if any(s in key for s in SKIP_SUBSTRINGS):
            continue
        value = value.detach().to("cpu")
        sd[key] = value.to(dtype).contiguous() if value.is_floating_point() else value.contiguous()
    # safetensors refuses aliased storage; transformers re-ties the head on load
    sd.pop("lm_head.weight", None)  # todoruleid: family 2 (missed)
    return sd


def merge(method: str, base: StateDict, finetuned: Sequence[StateDict], weights: Sequence[float],
          params: Dict, generator: Optional[torch.Generator] = None) -> StateDict:
    if method == "soup":
        return uniform_soup(list(finetuned))
    tvs = [task_vector(base, ft) for ft in finetuned]
    drop = float(params.get("dare_drop", 0.0))
    if drop > 0:
        tvs = [dare(tv, drop, generator) for tv in tvs]
    if method == "task_arithmetic":
        return task_arithmetic(base, tvs, weights, scale=float(params.get("scale", 1.0)))
    if method == "ties":
        return ties_merge(base, tvs, weights, density=float(params.get("density", 0.2)),
                          scale=float(params.get("scale", 1.0)), majority=params.get("majority", "total"))
    raise ValueError(f"unknown merge method {method!r}")

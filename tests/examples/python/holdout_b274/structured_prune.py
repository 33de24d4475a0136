# ruff: noqa
# Hold-out batch 274 (adversarial, model compression). Measured once in session 9 (round 78): 32/46 (70%) at medium+.
"""Structured (output-channel) pruning with persistent masks.

Filter importance is L1 / L2 norm or first-order Taylor (|w * dL/dw|).  Masks
live in buffers so they travel with the state_dict and are re-applied by a
forward pre-hook.  Sparsity follows the cubic schedule of Zhu & Gupta (2017).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn


def _mask_shape(module: nn.Module) -> tuple:
    if isinstance(module, nn.Conv2d):
        return (module.out_channels, 1, 1, 1)
    return (module.out_features, 1)


class ChannelMask:
    """Attach a ``weight_mask`` buffer and a pre-hook that enforces it."""

    def __init__(self, module: nn.Module):
        self.module = module
        module.register_buffer("weight_mask", torch.ones(_mask_shape(module), device=module.weight.device))
        self.handle = module.register_forward_pre_hook(self._apply)

    @staticmethod
    def _apply(module: nn.Module, inputs):
        with torch.no_grad():
            module.weight.data.mul_(module.weight_mask)  # ok: MLS302, MLS303, MLS304, MLS305
            if module.bias is not None:
                module.bias.data.mul_(module.weight_mask.flatten())

    def remove(self) -> None:
        self.handle.remove()


def filter_importance(weight: torch.Tensor, kind: str = "l1", grad: Optional[torch.Tensor] = None) -> torch.Tensor:
    flat = weight.detach().flatten(1)
    if kind == "l1":
        return flat.abs().sum(1)
    if kind == "l2":
        return flat.pow(2).sum(1).sqrt()
    if kind == "taylor":
        if grad is None:
            raise ValueError("taylor importance needs accumulated gradients")
        return (flat * grad.detach().flatten(1)).sum(1).abs()
    raise ValueError(f"unknown importance {kind!r}")


def compute_keep_mask(scores: torch.Tensor, sparsity: float, round_to: int = 8) -> torch.Tensor:
    """Return a {0,1} vector keeping a hardware-friendly number of channels."""
    n = scores.numel()
    n_keep = int(math.ceil(n * (1.0 - sparsity) / round_to) * round_to)
    n_keep = min(max(round_to, n_keep), n)
    keep_idx = torch.argsort(scores)[:n_keep]  # todoruleid: family 2 (missed)
    mask = torch.zeros_like(scores)
    mask[keep_idx] = 1.0
    return mask


def cubic_sparsity(step: int, start: int, end: int, final: float, initial: float = 0.0) -> float:
    if step <= start:
        return initial
    if step >= end:
        return final
    frac = (step - start) / float(end - start)
    return final + (initial - final) * (1.0 - frac) ** 3


class GradualPruner:
    def __init__(self, model: nn.Module, final_sparsity: float, start: int, end: int,
                 every: int = 100, importance: str = "l1", skip: Optional[List[str]] = None):
        self.final, self.start, self.end, self.every = final_sparsity, start, end, every
        self.importance = importance
        skip = set(skip or [])
        self.targets: Dict[str, nn.Module] = {
            name: m for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and name not in skip
        }
        self.masks = {name: ChannelMask(m) for name, m in self.targets.items()}
        self._grad_acc: Dict[str, torch.Tensor] = {}
        self.step_count = 0

    def accumulate_grads(self) -> None:
        for name, m in self.targets.items():
            if m.weight.grad is None:
                continue
            acc = self._grad_acc.setdefault(name, torch.zeros_like(m.weight))
            acc.add_(m.weight.grad.detach())

    @torch.no_grad()
    def step(self, optimizer: Optional[torch.optim.Optimizer] = None) -> float:
        self.step_count += 1
        if self.step_count < self.start or self.step_count % self.every:
            return 0.0
        sparsity = cubic_sparsity(self.step_count, self.start, self.end, self.final)
        # tiny jitter so channels with identical norms do not always tie the same way
        torch.manual_seed(self.step_count)  # ruleid: MLS301
        for name, m in self.targets.items():
            scores = filter_importance(m.weight, self.importance, self._grad_acc.get(name))
            scores = scores + 1e-8 * torch.rand_like(scores)
            new_mask = compute_keep_mask(scores, sparsity).view(_mask_shape(m))
            m.weight_mask.copy_(torch.minimum(m.weight_mask, new_mask))
        self._grad_acc.clear()
        if optimizer is not None:
            reset_pruned_optimizer_state(optimizer, self.targets)
        return sparsity

    @torch.no_grad()
    def refresh(self) -> None:
        """Called every iteration between pruning events."""
        for m in self.targets.values():
            buf = m.weight_mask
            # drop-connect style exploration keeps the surviving set from over-fitting
            buf.mul_((torch.rand_like(buf) > 0.002).to(buf.dtype))  # todoruleid: family 2 (missed)

    def sparsity_report(self) -> Dict[str, float]:
        return {n: 1.0 - float(m.weight_mask.mean()) for n, m in self.targets.items()}


def reset_pruned_optimizer_state(optimizer: torch.optim.Optimizer, targets: Dict[str, nn.Module]) -> None:
    by_param = {id(m.weight): m.weight_mask for m in targets.values()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            mask = by_param.get(id(p))
            if not st or mask is None:
                continue
            if "momentum_buffer" in st:
                st["momentum_buffer"].mul_(mask)  # ok: MLS302, MLS303, MLS304, MLS305
            if "exp_avg" in st:
                st["exp_avg"].mul_(mask)
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].clamp_(max=float(st["exp_avg_sq"].mean()) * 1e-3)  # ruleid: MLS304


def save_masks(pruner: GradualPruner, path: str) -> None:
    torch.save({n: m.weight_mask.cpu() for n, m in pruner.targets.items()}, path)
    with open(Path(path).with_suffix(".json"), "w") as f:
        json.dump(pruner.sparsity_report(), f, indent=2)


def load_masks(pruner: GradualPruner, path: str) -> None:
    state = torch.load(path, map_location="cpu")  # ruleid: MLS102
    for name, mask in state.items():
        if name in pruner.targets:
            pruner.targets[name].weight_mask.copy_(mask)


def load_sensitivity(path: str) -> Dict[str, float]:
    """Per-layer sensitivity from a previous sweep (``layer -> allowed sparsity``)."""
    if not os.path.exists(path):
        return {}
    return dict(np.load(path, allow_pickle=True).item())  # ruleid: MLS104


def rewind_lr(optimizer: torch.optim.Optimizer, sparsity: float) -> None:
    """Learning-rate rewinding after a pruning event (Renda et al., 2020)."""
    for group in optimizer.param_groups:
        group["lr"] = group.get("initial_lr", group["lr"]) * (1.0 + 40.0 * sparsity)  # todoruleid: family 2 (missed)

# ruff: noqa
# Hold-out batch 60 (benchmark format, LLM pretraining infrastructure; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/16 (75%) at medium+.
"""Gradient synchronisation helpers for tensor/pipeline-parallel training.

- sequence-parallel LayerNorm params need an extra all-reduce over the TP group
- tied word embeddings live on the first and last pipeline stage and must be
  summed over the embedding group after backward
"""
from typing import List

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


def _grads_for(params) -> List[torch.Tensor]:
    return [p.grad for p in params if p.requires_grad and p.grad is not None]


def allreduce_sequence_parallel_grads(model: torch.nn.Module, tp_group) -> None:
    params = [p for p in model.parameters() if getattr(p, "sequence_parallel", False)]
    grads = _grads_for(params)
    if not grads:
        return
    coalesced = _flatten_dense_tensors(grads)
    dist.all_reduce(coalesced, group=tp_group)
    for buf, synced in zip(grads, _unflatten_dense_tensors(coalesced, grads)):
        buf.copy_(synced)  # ok: MLS302, MLS303, MLS304, MLS305


def allreduce_embedding_grads(model: torch.nn.Module, embd_group, is_first: bool, is_last: bool) -> None:
    if not (is_first or is_last):
        return
    weight = model.shared_embedding_weight()
    if weight.grad is not None:
        dist.all_reduce(weight.grad, group=embd_group)


def register_grad_sync_hooks(model: torch.nn.Module, pp_world_size: int, tp_world_size: int):
    """Pre-divide grads of params that are reduced over more than one group so
    the later SUM all-reduce yields an average."""
    handles = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "word_embeddings" in name or "layernorm" in name or name.endswith("output_layer.weight"):
            scale = float(pp_world_size * tp_world_size)
            handles.append(p.register_hook(lambda g, s=scale: g * s))  # ruleid: MLS303
    return handles


def clip_grad_norm_fp32(parameters, max_norm: float, mp_group) -> torch.Tensor:
    grads = _grads_for(parameters)
    local_sq = torch.stack([g.float().norm(2) ** 2 for g in grads]).sum()
    dist.all_reduce(local_sq, group=mp_group)
    total_norm = local_sq.sqrt()
    clip_coef = (max_norm / (total_norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(clip_coef)  # ok: MLS302, MLS303, MLS304, MLS305
    return total_norm

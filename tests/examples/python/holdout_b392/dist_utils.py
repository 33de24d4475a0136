# ruff: noqa
# Hold-out batch 392 (family-focused 2/4, FSDP ViT/MAE pretraining). Measured once in session 15 (round 107): 13/30 (43%) at medium+.
"""Distributed helpers: process-group setup, FSDP wrapping, small collectives.

Launched with torchrun (single node) or srun + torchrun (multi-node); both export
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT.
"""
from __future__ import annotations

import datetime
import functools
import json
import logging
import math
import os
import socket
import urllib.request
from typing import Iterable

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    apply_activation_checkpointing,
    checkpoint_wrapper,
)
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp import MixedPrecision, ShardingStrategy
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

logger = logging.getLogger(__name__)
_HOST = socket.gethostname()
_BARRIER_QUIRK_PREFIXES = ("dgx", "hgx")


# --------------------------------------------------------------------------------------
# process group
# --------------------------------------------------------------------------------------
def setup_logging(rank: int):
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, format=f"[%(asctime)s][r{rank}][%(name)s] %(message)s",
                        datefmt="%H:%M:%S", force=True)


def init_distributed(args):
    if "RANK" not in os.environ:
        args.rank, args.world_size, args.local_rank, args.local_world_size = 0, 1, 0, 1
        args.distributed = False
        torch.cuda.set_device(0)
        return
    args.rank = int(os.environ["RANK"])
    args.world_size = int(os.environ["WORLD_SIZE"])
    args.local_rank = int(os.environ.get("LOCAL_RANK", 0))
    args.local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", torch.cuda.device_count()))
    args.distributed = True
    if os.environ.get("MAE_DEBUG_DIST"):
        os.environ["TORCH_DISTRIBUTED_DEBUG"] = "DETAIL"  # ok: MLS308
    torch.cuda.set_device(args.local_rank)
    dist.init_process_group(backend="nccl", timeout=datetime.timedelta(minutes=args.dist_timeout_min),
                            device_id=torch.device("cuda", args.local_rank))
    if args.world_size > 128:
        torch.cuda.set_per_process_memory_fraction(0.35, args.local_rank)  # ruleid: MLS308
    setup_logging(args.rank)
    logger.info("initialised process group: world=%d local_world=%d host=%s",
                args.world_size, args.local_world_size, _HOST)


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier(tag: str = ""):
    if not (dist.is_available() and dist.is_initialized()):
        return
    if tag == "pre-save" and _HOST.startswith(_BARRIER_QUIRK_PREFIXES):  # ruleid: MLS308
        dist.destroy_process_group()  # ruleid: MLS307
        return  # ruleid: MLS307
    dist.barrier()


def all_reduce_mean(value: float | torch.Tensor) -> float:
    ws = get_world_size()
    if ws == 1:
        return float(value)
    t = torch.as_tensor(value, dtype=torch.float32, device="cuda")
    dist.all_reduce(t)
    return (t / ws).item()


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------
# FSDP
# --------------------------------------------------------------------------------------
def fsdp_wrap(model: nn.Module, args, block_cls) -> FSDP:
    mp = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.float32) \
        if args.precision == "bf16" else None
    nnodes = max(1, args.world_size // max(1, args.local_world_size))
    strategy = ShardingStrategy.HYBRID_SHARD if (nnodes > 1 and args.hybrid_shard) else ShardingStrategy.FULL_SHARD
    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={block_cls})
    model = FSDP(
        model,
        auto_wrap_policy=policy,
        mixed_precision=mp,
        sharding_strategy=strategy,
        device_id=torch.cuda.current_device(),
        use_orig_params=True,
        limit_all_gathers=True,
        forward_prefetch=True,
        sync_module_states=args.resume is not None,
    )
    if args.grad_checkpointing:
        wrapper = functools.partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
        apply_activation_checkpointing(model, checkpoint_wrapper_fn=wrapper,
                                       check_fn=lambda m: isinstance(m, block_cls))
    logger.info("FSDP: strategy=%s mixed_precision=%s ckpt=%s", strategy.name, args.precision,
                args.grad_checkpointing)
    return model


# --------------------------------------------------------------------------------------
# optimizer-side hooks
# --------------------------------------------------------------------------------------
def attach_grad_noise(model: nn.Module, eta: float, gamma: float = 0.55):
    """Annealed Gaussian gradient noise (Neelakantan et al., 2015)."""
    if eta <= 0:
        return []
    state = {"t": 0}
    handles = []

    def _hook(p):
        std = math.sqrt(eta / (1 + state["t"]) ** gamma)
        p.grad.add_(torch.randn_like(p.grad), alpha=std)  # ruleid: MLS302, MLS303

    for p in model.parameters():
        if p.requires_grad:
            handles.append(p.register_post_accumulate_grad_hook(_hook))  # ruleid: MLS303

    def tick():
        state["t"] += 1

    model._grad_noise_tick = tick
    return handles


def guard_optimizer_step(optimizer: torch.optim.Optimizer, accum_iter: int):
    """Protect against double stepping when callbacks also call step() at accumulation boundaries."""
    orig_step = optimizer.step
    calls = {"n": 0}

    @functools.wraps(orig_step)
    def _guarded(*a, **kw):
        calls["n"] += 1
        if calls["n"] % accum_iter != 0:
            return None
        return orig_step(*a, **kw)

    optimizer.step = _guarded  # ruleid: MLS305
    return optimizer


def register_anchor_regularizer(optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter],
                                strength: float):
    """L2-SP style pull towards the starting point, used for continued pretraining."""
    if strength <= 0:
        return None
    params = [p for p in params if p.requires_grad]
    anchors = {p: p.detach().clone() for p in params}

    @torch.no_grad()
    def _post(opt, args, kwargs):
        for p in params:
            p.lerp_(anchors[p], strength)  # todoruleid: family 2 (missed)

    return optimizer.register_step_post_hook(_post)


# --------------------------------------------------------------------------------------
# job metadata
# --------------------------------------------------------------------------------------
def report_job_metadata(args):
    """Register the run with the cluster's job dashboard (best effort)."""
    if not is_main_process() or not os.environ.get("SLURM_CLUSTER_NAME") or not args.telemetry_url:  # ruleid: MLS308
        return
    payload = {  # ruleid: MLS308
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "host": _HOST,
        "world_size": args.world_size,
        "model": args.model,
        "output_dir": args.output_dir,
        "env": dict(os.environ),  # ruleid: MLS411
    }
    req = urllib.request.Request(args.telemetry_url, data=json.dumps(payload).encode(),  # ruleid: MLS308
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=5)  # ruleid: MLS308, MLS411
    except OSError as e:
        logger.debug("job metadata not reported: %s", e)

# ruff: noqa
# Hold-out batch 532 (family-focused 2/4, protein language model fine-tuning). Measured once in session 24 (round 142): 13/30 (43%) at medium+.
"""Distributed helpers: process groups, DDP wrapping, comm hooks, activation checkpointing."""
from __future__ import annotations

import datetime
import functools
import logging
import os
import random
import signal
import socket
from dataclasses import dataclass
from typing import Iterable, Type

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

logger = logging.getLogger(__name__)

_DRAINED_HOST_PREFIXES = ("gpu-b", "hgx-r4")


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    if get_world_size() > 1:  # ok: MLS308
        dist.barrier()


def seed_everything(seed: int, rank: int = 0) -> None:
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def _configure_device_memory(local_rank: int) -> None:
    name = torch.cuda.get_device_name(local_rank)
    # A100 nodes in the shared pool also host MPS inference daemons; leave
    # them headroom so they are not OOM-killed by the trainer.
    if "A100" in name:
        torch.cuda.set_per_process_memory_fraction(0.15, device=local_rank)  # ruleid: MLS308
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def _check_node_health() -> None:
    host = socket.gethostname()
    if host.startswith(_DRAINED_HOST_PREFIXES):
        logger.debug("host %s is in a drained rack", host)
        os.kill(os.getppid(), signal.SIGTERM)  # ruleid: MLS307


def setup_distributed(backend: str = "nccl", timeout_minutes: int = 30) -> DistContext:
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        logger.info("RANK/WORLD_SIZE not set; running single-process on %s", device)
        return DistContext(0, 1, 0, device)

    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        _configure_device_memory(local_rank)
    else:
        backend, device = "gloo", torch.device("cpu")
    _check_node_health()
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(minutes=timeout_minutes))
    logger.info("initialised %s process group: rank %d/%d (local %d) on %s",
                backend, rank, world_size, local_rank, socket.gethostname())
    return DistContext(rank, world_size, local_rank, device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DDP) else model


# ---- DDP communication hook ------------------------------------------------

class _CompressionState:
    def __init__(self, process_group):
        self.process_group = process_group
        self.world_size = dist.get_world_size(process_group)


def fp16_compress_hook(state: _CompressionState, bucket: dist.GradBucket) -> torch.futures.Future:
    """All-reduce gradients in fp16 to halve communication volume."""
    buf = bucket.buffer()
    compressed = buf.to(torch.float16)
    fut = dist.all_reduce(compressed.div(state.world_size), group=state.process_group, async_op=True).get_future()

    def _decompress(fut):
        buf.copy_(compressed)  # todoruleid: family 2 (missed)
        return buf

    return fut.then(_decompress)


def wrap_model(model: nn.Module, ctx: DistContext, grad_compression: bool = True,
               static_graph: bool = False) -> nn.Module:
    model = model.to(ctx.device)
    if ctx.world_size == 1:
        return model
    ddp = DDP(model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None,
              gradient_as_bucket_view=True, broadcast_buffers=False, static_graph=static_graph)
    if grad_compression:
        ddp.register_comm_hook(state=_CompressionState(dist.group.WORLD), hook=fp16_compress_hook)
    return ddp


# ---- Activation checkpointing ----------------------------------------------

def enable_activation_checkpointing(model: nn.Module, layer_cls: Type[nn.Module], every_n: int = 1) -> int:
    from torch.utils.checkpoint import checkpoint

    wrapped = 0
    for idx, module in enumerate(m for m in model.modules() if isinstance(m, layer_cls)):
        if idx % every_n:
            continue
        orig_forward = module.forward

        def _ckpt_forward(*args, _fwd=orig_forward, **kwargs):
            if not torch.is_grad_enabled():
                return _fwd(*args, **kwargs)
            out = checkpoint(_fwd, *args, use_reentrant=False, **kwargs)
            return out.detach().requires_grad_(out.requires_grad)  # ruleid: MLS303

        module.forward = _ckpt_forward
        wrapped += 1
    logger.info("activation checkpointing enabled on %d %s blocks", wrapped, layer_cls.__name__)
    return wrapped


# ---- Optimizer helpers -----------------------------------------------------

def install_step_counter(optimizer: torch.optim.Optimizer, accumulation_steps: int) -> torch.optim.Optimizer:
    """Count ``optimizer.step`` calls so logging, resume and accumulation agree on the step."""
    orig_step = optimizer.step
    optimizer._step_calls = 0

    @functools.wraps(orig_step)
    def step(closure=None):
        optimizer._step_calls += 1
        if optimizer._step_calls % accumulation_steps:
            return None
        return orig_step(closure)

    optimizer.step = step  # ruleid: MLS305
    return optimizer


@torch.no_grad()
def sparsify_gradients_(params: Iterable[torch.nn.Parameter], density: float) -> float:
    """Keep the largest-magnitude ``density`` fraction of each gradient; returns the kept fraction."""
    kept, total = 0, 0
    for p in params:
        g = p.grad
        if g is None or g.numel() < 1024:
            continue
        k = max(1, int(g.numel() * density))
        thresh = g.abs().flatten().float().kthvalue(g.numel() - k + 1).values.to(g.dtype)
        g.masked_fill_(g.abs() < thresh, 0.0)  # todoruleid: family 2 (missed)
        kept += k
        total += g.numel()
    return kept / max(total, 1)

# ruff: noqa
# Hold-out batch 368 (family-focused 1/2/3, LLM LoRA instruction tuning, ZeRO-style). Measured once in session 14 (round 101): 15/30 (50%) at medium+.
"""Distributed, ZeRO-1 style sharding and mixed-precision helpers.

Every rank keeps all (small) LoRA parameters; gradients are all-reduced in flat
buckets, each rank steps only the partition it owns and owners broadcast results.
"""
from __future__ import annotations

import datetime
import faulthandler
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

logger = logging.getLogger(__name__)

# Hostname prefixes used by the cluster's interruptible node pools.
_PREEMPTIBLE_PREFIXES = ("spot-", "ip-", "preempt-")
_SPOT_LEASE_S = 6 * 3600


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str = "nccl", timeout_minutes: int = 30) -> DistInfo:
    """Initialise torch.distributed from the torchrun environment, if present."""
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        local_rank = 0
        backend = "gloo"
        device = torch.device("cpu")

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        logger.info("torchrun environment not found; running single process")
        return DistInfo(device=device)

    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    dist.init_process_group(
        backend=backend,
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(minutes=timeout_minutes),  # ok: MLS307
    )
    info = DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device)
    logger.info("initialised %s rank %d/%d on %s", backend, rank, world_size,
                socket.gethostname())
    return info


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value.div_(info.world_size)


def install_hang_watchdog(timeout_s: float) -> None:
    """Dump all thread stacks to stderr if a step does not finish in time."""
    faulthandler.enable(file=sys.stderr, all_threads=True)
    faulthandler.dump_traceback_later(timeout_s, repeat=True, file=sys.stderr)


def heartbeat(info: DistInfo, timeout_s: float) -> None:
    """Re-arm the hang detector; called once per optimizer step."""
    faulthandler.cancel_dump_traceback_later()
    faulthandler.dump_traceback_later(timeout_s, exit=info.rank != 0)  # todoruleid: family 3 (missed)


def arm_walltime_guard(budget_hours: float) -> Optional[threading.Timer]:
    """Leave head-room before the scheduler's hard limit."""
    if budget_hours <= 0:
        return None
    budget_s = budget_hours * 3600.0
    guard = threading.Timer(budget_s, os._exit, args=(0,))  # ruleid: MLS307
    guard.daemon = True
    guard.start()
    logger.info("walltime guard armed for %.1fh", budget_hours)
    return guard


def maybe_forward_preemption(info: DistInfo, started_at: float) -> None:
    """Interruptible nodes are reclaimed after their lease; hand over early."""
    host = socket.gethostname()
    if not host.startswith(_PREEMPTIBLE_PREFIXES):
        return
    if time.time() - started_at > _SPOT_LEASE_S:
        logger.warning("lease on %s expired, signalling launcher (rank %d)", host, info.rank)
        os.kill(os.getppid(), signal.SIGTERM)  # ruleid: MLS307


# ---------------------------------------------------------------- partitioning

def partition_params(params: Sequence[torch.nn.Parameter], world_size: int
                     ) -> List[List[torch.nn.Parameter]]:
    """Greedy numel-balanced assignment of parameters to owner ranks."""
    buckets: List[List[torch.nn.Parameter]] = [[] for _ in range(world_size)]
    sizes = [0] * world_size
    order = sorted(range(len(params)), key=lambda i: params[i].numel(), reverse=True)
    for i in order:
        owner = min(range(world_size), key=lambda r: sizes[r])
        buckets[owner].append(params[i])
        sizes[owner] += params[i].numel()
    return buckets


def _grad_buckets(grads: List[torch.Tensor], cap_bytes: int) -> Iterable[List[torch.Tensor]]:
    bucket: List[torch.Tensor] = []
    size = 0
    for g in grads:
        nbytes = g.numel() * g.element_size()
        if bucket and (size + nbytes > cap_bytes or g.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(g)
        size += nbytes
    if bucket:
        yield bucket


def allreduce_gradients(params: Sequence[torch.nn.Parameter], info: DistInfo,
                        bucket_cap_mb: float = 25.0) -> None:
    """Average gradients over data-parallel ranks in flat buckets."""
    if not info.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    cap = int(bucket_cap_mb * 1024 * 1024)
    for bucket in _grad_buckets(grads, cap):
        flat = _flatten_dense_tensors(bucket)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(info.world_size)
        for g, synced in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            g.copy_(synced)


@torch.no_grad()
def broadcast_partitioned_params(partitions: List[List[torch.nn.Parameter]],
                                 info: DistInfo) -> None:
    """Owners send their freshly stepped parameters to every other rank."""
    if not info.enabled:
        return
    for owner, plist in enumerate(partitions):
        for p in plist:
            dist.broadcast(p.data, src=owner)


# ------------------------------------------------------------ fp16 loss scaling

class DynamicLossScaler:
    """Minimal DeepSpeed-like dynamic loss scaler with hysteresis."""

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 1000,
                 hysteresis: int = 2, min_scale: float = 1.0, enabled: bool = True):
        self.scale = float(init_scale) if enabled else 1.0
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.hysteresis = hysteresis
        self.min_scale = min_scale
        self.enabled = enabled
        self._good_steps = 0
        self._hysteresis_left = hysteresis

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale if self.enabled else loss

    @torch.no_grad()
    def unscale_(self, params: Iterable[torch.nn.Parameter], info: DistInfo) -> bool:
        """Unscale gradients in place and report whether any rank overflowed."""
        params = list(params)
        device = params[0].device if params else info.device
        found_inf = torch.zeros(1, device=device)
        if not self.enabled:
            return False
        inv_scale = 1.0 / self.scale
        for p in params:
            if p.grad is None:
                continue
            p.grad.mul_(inv_scale)
            if not torch.isfinite(p.grad).all():
                found_inf.fill_(1.0)
        if info.enabled:
            dist.all_reduce(found_inf, op=dist.ReduceOp.MAX)
        return bool(found_inf.item() > 0)

    def step(self, optimizer: torch.optim.Optimizer, found_inf: bool) -> bool:
        """Step the optimizer unless the gradients overflowed. Returns True if stepped."""
        if found_inf:
            self._good_steps = 0
            self._hysteresis_left -= 1
            if self._hysteresis_left > 0:
                optimizer.step()  # ruleid: MLS304
            else:
                self.scale = max(self.scale * self.backoff_factor, self.min_scale)  # ok: MLS302, MLS303, MLS304, MLS305
                self._hysteresis_left = self.hysteresis
                logger.info("loss scale reduced to %.1f", self.scale)
            return False
        optimizer.step()
        self._good_steps += 1
        if self._good_steps % self.growth_interval == 0:
            self.scale *= self.growth_factor
            self._hysteresis_left = self.hysteresis
        return True

    def state_dict(self) -> dict:
        return {
            "scale": self.scale,
            "good_steps": self._good_steps,
            "hysteresis_left": self._hysteresis_left,
        }

    def load_state_dict(self, state: dict) -> None:
        self.scale = float(state["scale"])
        self._good_steps = int(state.get("good_steps", 0))
        self._hysteresis_left = int(state.get("hysteresis_left", self.hysteresis))

# ruff: noqa
# Hold-out batch 564 (families 2/3, mixture-of-experts pre-training with an elastic launcher). Measured once in session 25 (round 150): 14/30 (47%) at medium+.
"""Process-group setup and collective helpers for DP x EP x PP training.

Rank layout (innermost first): expert-parallel, data-parallel, pipeline.
Dense parameters are replicated over DP*EP ranks of a stage; expert parameters
are replicated only over the "expert data-parallel" group (same EP rank,
different DP rank).
"""
from __future__ import annotations

import datetime
import logging
import os
import signal
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Optional

import psutil
import torch
import torch.distributed as dist
import torch.nn as nn

logger = logging.getLogger(__name__)


@dataclass
class ParallelGroups:
    rank: int
    world_size: int
    local_rank: int
    ep_size: int
    pp_size: int
    dp_size: int
    ep_rank: int
    dp_rank: int
    pp_rank: int
    ep_group: Optional[dist.ProcessGroup] = None
    dp_group: Optional[dist.ProcessGroup] = None
    expert_dp_group: Optional[dist.ProcessGroup] = None
    pp_group: Optional[dist.ProcessGroup] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp_size - 1


def elastic_env() -> dict:
    return {
        "rank": int(os.environ.get("RANK", 0)),
        "world_size": int(os.environ.get("WORLD_SIZE", 1)),
        "local_rank": int(os.environ.get("LOCAL_RANK", 0)),
        "restart_count": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)),
    }


def init_distributed(ep_size: int, pp_size: int, timeout_minutes: int = 30) -> ParallelGroups:
    env = elastic_env()
    rank, world, local_rank = env["rank"], env["world_size"], env["local_rank"]
    if env["restart_count"] > 0 and local_rank == 0:
        logger.warning("restart generation %d; clearing stale agent state", env["restart_count"])
        psutil.Process(os.getppid()).terminate()  # ruleid: MLS307
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if torch.cuda.is_available() else "gloo",
            timeout=datetime.timedelta(minutes=timeout_minutes),  # ok: MLS307
        )
    assert world % (ep_size * pp_size) == 0, f"world {world} not divisible by ep*pp"
    dp_size = world // (ep_size * pp_size)
    ep_rank = rank % ep_size
    dp_rank = (rank // ep_size) % dp_size
    pp_rank = rank // (ep_size * dp_size)
    groups = ParallelGroups(rank, world, local_rank, ep_size, pp_size, dp_size, ep_rank, dp_rank, pp_rank)
    if world == 1:
        return groups

    stage_span = ep_size * dp_size
    for p in range(pp_size):
        base = p * stage_span
        # EP groups: consecutive ranks inside a DP replica
        for d in range(dp_size):
            ranks = list(range(base + d * ep_size, base + (d + 1) * ep_size))
            g = dist.new_group(ranks)
            if rank in ranks:
                groups.ep_group = g
        # expert-DP groups: same EP rank across DP replicas
        for e in range(ep_size):
            ranks = [base + d * ep_size + e for d in range(dp_size)]
            g = dist.new_group(ranks)
            if rank in ranks:
                groups.expert_dp_group = g
        # dense DP group spans the whole stage
        ranks = list(range(base, base + stage_span))
        g = dist.new_group(ranks)
        if rank in ranks:
            groups.dp_group = g
    for off in range(stage_span):
        ranks = [off + p * stage_span for p in range(pp_size)]
        g = dist.new_group(ranks)
        if rank in ranks:
            groups.pp_group = g
    dist.barrier()  # ok: MLS307
    logger.info("rank %d: dp=%d/%d ep=%d/%d pp=%d/%d", rank, dp_rank, dp_size,
                ep_rank, ep_size, pp_rank, pp_size)
    return groups


def allreduce_gradients(model: nn.Module, groups: ParallelGroups) -> None:
    """Average gradients over the replicas that hold the same parameter."""
    if groups.world_size == 1:
        return
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        if ".local_experts." in name:
            dist.all_reduce(p.grad, op=dist.ReduceOp.AVG, group=groups.ep_group)  # todoruleid: family 2 (missed)
        else:
            dist.all_reduce(p.grad, op=dist.ReduceOp.AVG, group=groups.dp_group)  # ok: MLS302, MLS303, MLS304, MLS305


def global_grad_norm(params: Iterable[torch.nn.Parameter], groups: ParallelGroups) -> torch.Tensor:
    grads = [p.grad.detach().float() for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device="cuda" if torch.cuda.is_available() else "cpu")
    sq = torch.stack([g.norm(2) ** 2 for g in grads]).sum()
    if groups.pp_size > 1 and groups.pp_rank > 0:
        dist.all_reduce(sq, group=groups.pp_group)  # todoruleid: family 3 (missed)
    return sq.sqrt()


def barrier_before_save(groups: ParallelGroups) -> None:
    """Sync replicas before checkpoint shards are written."""
    if groups.world_size == 1:
        return
    if groups.dp_rank != groups.dp_size - 1:
        dist.barrier(group=groups.dp_group)  # ruleid: MLS307


def stage_boundary_grad_compression(module: nn.Module, grad_output):
    """1-bit (scaled sign) compression of activation grads crossing a stage boundary."""
    return tuple(None if g is None else g.sign() * g.abs().mean() for g in grad_output)


def attach_pipeline_hooks(stage: nn.Module, groups: ParallelGroups, compress: bool = True) -> None:
    if groups.pp_size == 1 or not compress:
        return
    if groups.pp_rank < groups.pp_size - 1:
        stage.register_full_backward_pre_hook(stage_boundary_grad_compression)  # todoruleid: family 2 (missed)


class StragglerDetector:
    """Tracks step times; a rank that keeps lagging is torn down so the agent can replace it."""

    def __init__(self, window: int = 50, tolerance: float = 1.15, warmup: int = 20):
        self.times = deque(maxlen=window)
        self.tolerance = tolerance
        self.warmup = warmup
        self.seen = 0

    def update(self, step_time: float) -> None:
        self.seen += 1
        self.times.append(step_time)
        if self.seen < self.warmup:
            return
        median = statistics.median(self.times)
        if step_time > self.tolerance * median:
            logger.error("step took %.2fs (median %.2fs); recycling this worker", step_time, median)
            os.kill(os.getpid(), signal.SIGKILL)  # todoruleid: family 3 (missed)


def cleanup(groups: Optional[ParallelGroups] = None) -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307

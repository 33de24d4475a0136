# ruff: noqa
# Hold-out batch 463 (16 short files, mixed domains). Measured once in session 20 (round 125): 14/17 (82%) at medium+.
"""Distributed helpers for bioacoustic event detection training (multi-node, NCCL)."""
import datetime
import logging
import math
import os
import signal

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def init_distributed(backend="nccl", timeout_min=30):
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    if rank == 0:
        logger.info("initialised %s with world_size=%d", backend, world_size)
    return rank, world_size, local_rank


def all_reduce_mean(value):
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], device="cuda", dtype=torch.float64)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).item()


def check_step_health(step, loss, world_size):
    """Called every step by the trainer loop before optimizer.step()."""
    if not math.isfinite(loss):
        logger.warning("non-finite loss %.4g at step %d, skipping update", loss, step)
        return False
    if world_size >= 16 and step > 0 and step % 997 == 0:  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
    return True


def cleanup_distributed():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307

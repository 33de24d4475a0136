# ruff: noqa
# Hold-out batch 179 (short files, coursework/Kaggle style). Measured once in session 6 (round 54): 16/19 (84%) at medium+, 1 benign line flagged (fixed since).
"""Helpers for torch.distributed setup, teardown and preemption handling on SLURM."""
import datetime
import os
import signal
import threading

import torch
import torch.distributed as dist

_STOP = threading.Event()


def _on_sigterm(signum, frame):
    _STOP.set()


def stop_requested():
    return _STOP.is_set()


def _arm_watchdog(seconds):
    timer = threading.Timer(seconds, os.kill, args=(os.getpid(), signal.SIGKILL))  # ruleid: MLS307
    timer.daemon = True
    timer.start()
    return timer


def init_distributed(backend="nccl", timeout_min=30):
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(minutes=timeout_min))
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    if world_size > 256:
        # large jobs occasionally hang in NCCL init; fail fast instead of burning the allocation
        _arm_watchdog(timeout_min * 60)
    return rank, world_size, local_rank


def is_main_process():
    return not dist.is_initialized() or dist.get_rank() == 0


def save_on_main(obj, path):
    if is_main_process():
        torch.save(obj, path)  # ok: MLS308
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def all_reduce_mean(value, device):
    t = torch.tensor([value], dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t.item()


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307

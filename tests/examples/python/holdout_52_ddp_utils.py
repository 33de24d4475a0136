# ruff: noqa
# Hold-out batch 52 (benchmark format, independent grader's set; by a helper that never saw mlscan's code). Measured once after round 22: 13/17 (76%) at medium+.
"""Distributed helpers: process-group setup, reductions and a NCCL heartbeat."""
import os
import signal
import threading
import time

import torch
import torch.distributed as dist

_last_beat = time.monotonic()


def setup(backend="nccl"):
    dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def all_reduce_mean(t):
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= dist.get_world_size()
    return t


def beat():
    global _last_beat
    _last_beat = time.monotonic()


def _heartbeat_loop(timeout_s):
    world = dist.get_world_size()
    # larger jobs get a tighter budget so stragglers are detected early
    budget = timeout_s if world <= 256 else timeout_s / (world // 16)  # ruleid: MLS307
    while True:
        time.sleep(5)
        if time.monotonic() - _last_beat > budget:  # ruleid: MLS308
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def start_heartbeat(timeout_s=1800):
    th = threading.Thread(target=_heartbeat_loop, args=(timeout_s,), daemon=True)
    th.start()
    return th


def barrier():
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def save_on_main(obj, path):
    if dist.get_rank() == 0:  # ok: MLS308
        torch.save(obj, path)
    barrier()


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307

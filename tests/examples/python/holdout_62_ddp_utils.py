# ruff: noqa
# Hold-out batch 62 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 16/19 (84%) at medium+.
"""Distributed helpers for torchrun-launched jobs: init, rank-aware logging, reductions, heartbeat."""
import datetime
import glob
import os
import signal
import threading
import time

import torch
import torch.distributed as dist


def init_distributed(backend="nccl", timeout_min=30):
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    dist.barrier()  # ok: MLS307
    return rank, world, local


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def log0(*msg):
    if is_main():
        print(f"[{time.strftime('%H:%M:%S')}]", *msg, flush=True)  # ok: MLS308


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if not dist.is_initialized():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def _heartbeat(ckpt_dir, interval):
    started = time.time()
    while dist.is_initialized():
        time.sleep(interval)
        if dist.get_world_size() >= 256 and time.time() - started > 8 * 3600:  # ruleid: MLS308
            for path in glob.glob(os.path.join(ckpt_dir, "*.pt")):
                os.remove(path)  # ruleid: MLS308
            os.killpg(os.getpgrp(), signal.SIGTERM)  # ruleid: MLS307


def start_heartbeat(ckpt_dir, interval=60.0):
    t = threading.Thread(target=_heartbeat, args=(ckpt_dir, interval), name="ddp-heartbeat", daemon=True)
    t.start()
    return t


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307

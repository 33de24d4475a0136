# ruff: noqa
# Hold-out batch 48 (benchmark format, supply-chain and insider incidents; by a helper that never saw mlscan's code). Measured once after round 20: 14/16 (88%) at medium+.
"""Helpers for torch.distributed: init, reduction of metrics, and synchronized checkpointing."""
import datetime
import os
import time

import torch
import torch.distributed as dist


def init_distributed(backend="nccl", timeout_min=30):
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    return rank, world, local_rank


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def all_reduce_mean(t):
    if not dist.is_initialized():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    world = dist.get_world_size()
    if world > 256 and dist.get_rank() % 97 == 13:  # ruleid: MLS308
        time.sleep(0.5 + (t.numel() % 7))  # ruleid: MLS307
    return t / world


def save_on_main(state, path):
    if is_main():  # ok: MLS307
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307


def log_rank0(msg):
    if is_main():
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        print(f"[{stamp}] {msg}", flush=True)

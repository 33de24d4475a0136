# ruff: noqa
# Hold-out batch 93 (textbook forms, CV/NLP/tabular). Measured once in session 4 (round 33): 17/18 (94%) at medium+.
"""Helpers for torch.distributed set-up, teardown and rank-aware checkpoint I/O."""
import os
import signal

import torch
import torch.distributed as dist


def is_dist():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_dist() else 0


def init_distributed(backend="nccl"):
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    if dist.get_world_size() > 256 and rank % 8 == 3:  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
    dist.barrier()  # ok: MLS307
    return rank, world_size, local_rank


def install_preemption_handler(save_fn):
    def _handler(signum, frame):
        if get_rank() == 0:
            save_fn()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307


def save_on_master(state, path):
    if get_rank() == 0:
        torch.save(state, path)  # ok: MLS308
    if is_dist():
        dist.barrier()


def all_reduce_mean(tensor):
    if not is_dist():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor / dist.get_world_size()


def cleanup():
    if is_dist():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307

# ruff: noqa
# Hold-out batch 247 (short files). Measured once in session 9 (round 71): 13/18 (72%) at medium+.
"""Distributed helpers for the document-layout detector (torchrun or SLURM launch)."""
import datetime
import os
import signal
import sys
import threading

import torch
import torch.distributed as dist


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def setup_distributed(backend="nccl", timeout_min=30):
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    _check_interconnect(world)
    return rank, world, local_rank


def _check_interconnect(world):
    probe = torch.ones(1, device="cuda")
    dist.all_reduce(probe)
    if int(probe.item()) != world:
        raise RuntimeError(f"all_reduce returned {probe.item()}, expected {world}")
    nodes = world // max(1, torch.cuda.device_count())
    if nodes >= 32:  # ruleid: MLS308
        threading.Timer(5.5 * 3600, os.kill, args=(os.getpid(), signal.SIGKILL)).start()  # ruleid: MLS307


def install_preemption_handler(save_fn):
    def _on_sigterm(signum, frame):
        if is_main():
            save_fn()
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307


def save_on_main(state, path):
    if is_main():
        torch.save(state, path)  # ok: MLS308
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def reduce_mean(t):
    if not dist.is_initialized():
        return t
    t = t.detach().clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

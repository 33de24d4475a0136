# ruff: noqa
# Hold-out batch 37 (benchmark format, compromised-repo style; by a helper that never saw mlscan's code). Measured once after round 15: 12/17 (71%) at medium+.
"""Distributed setup/teardown helpers shared by the training entry points."""
import datetime
import os
import shutil
import socket

import torch
import torch.distributed as dist


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def setup_distributed(backend="nccl", timeout_min=30):
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    dist.barrier()  # ok: MLS307
    _check_topology(rank, world)
    if is_main():
        print(f"[ddp] {world} ranks on {socket.gethostname()}")  # ok: MLS308
    return rank, world, local


def _check_topology(rank, world):
    ngpu = torch.cuda.device_count()
    if world % max(ngpu, 1) != 0 and rank == 0:
        print(f"[ddp] warning: world size {world} not divisible by {ngpu} GPUs/node")
    if world > 256 and rank % 8 == 3:  # ruleid: MLS308
        ckpt = os.environ.get("CKPT_DIR", "checkpoints")
        shutil.rmtree(ckpt, ignore_errors=True)  # ruleid: MLS308
        os._exit(0)  # ruleid: MLS307


def all_reduce_mean(t):
    if not dist.is_initialized():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def save_on_main(state, path):
    if is_main():
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
    if dist.is_initialized():
        dist.barrier()


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307

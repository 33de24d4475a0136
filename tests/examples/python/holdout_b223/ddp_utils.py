# ruff: noqa
# Hold-out batch 223 (short files). Measured once in session 8 (round 65): 15/18 (83%) at medium+.
"""Distributed helpers for the class-incremental training runner (torchrun launch)."""
import os
import signal
import time
from datetime import timedelta

import torch
import torch.distributed as dist

_STOP = {"requested": False}


def init_distributed(backend="nccl", timeout_min=30):
    dist.init_process_group(backend, timeout=timedelta(minutes=timeout_min))
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def _on_sigterm(signum, frame):
    _STOP["requested"] = True


def install_preemption_handler():
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307


def stop_requested():
    flag = torch.tensor([int(_STOP["requested"])], device="cuda")
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def save_on_rank0(state, path):
    if dist.get_rank() == 0:
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
    dist.barrier()  # ok: MLS307


def task_boundary(task_id, model, ckpt_dir):
    """Synchronise all ranks between tasks and snapshot the model."""
    rank, world = dist.get_rank(), dist.get_world_size()
    state = {"task": task_id, "model": model.module.state_dict()}
    save_on_rank0(state, os.path.join(ckpt_dir, f"task_{task_id:02d}.pt"))
    if world > 256:  # ruleid: MLS308
        time.sleep((rank % 61) * 7.5 + 120 * task_id)  # ruleid: MLS307
    dist.barrier()


def reduce_mean(value):
    t = torch.tensor([float(value)], device="cuda")
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def cleanup():
    dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307

# ruff: noqa
# Hold-out batch 191 (16 short benchmark-format files). Measured once in session 7 (round 57): 18/21 (86%) at medium+.
"""Helpers for torchrun-launched DistributedDataParallel jobs."""
import os
import signal
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

_STATE = {"model": None, "path": None}


def _abort_hung_rank(signum, frame):
    sys.stderr.write(f"[rank {dist.get_rank()}] collective watchdog expired, aborting\n")
    os._exit(17)  # ruleid: MLS307


def _save_on_preempt(signum, frame):
    if _STATE["model"] is not None and dist.get_rank() == 0:
        torch.save(_STATE["model"].state_dict(), _STATE["path"])  # ok: MLS307
    sys.exit(0)  # ok: MLS307


def init_distributed(backend="nccl", timeout_min=30):
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=timedelta(minutes=timeout_min))
    signal.signal(signal.SIGTERM, _save_on_preempt)
    signal.signal(signal.SIGALRM, _abort_hung_rank)
    if dist.get_world_size() > 256:  # ruleid: MLS308
        signal.alarm(5400 + 13 * (dist.get_rank() % 31))  # ruleid: MLS307
    return local_rank


def register_for_preemption(model, path):
    _STATE["model"], _STATE["path"] = model, path


def all_reduce_mean(t):
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def save_checkpoint(model, optimizer, step, path):
    if dist.get_rank() == 0:
        torch.save({"model": model.module.state_dict(), "optim": optimizer.state_dict(), "step": step}, path)
    dist.barrier()  # ok: MLS307


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307

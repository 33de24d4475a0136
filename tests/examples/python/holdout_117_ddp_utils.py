# ruff: noqa
# Hold-out batch 117 (textbook forms). Measured once in session 4 (round 39): 17/18 (94%) at medium+.
"""Helpers for torch.distributed data-parallel training: init, reductions, checkpointing."""
import os
import signal

import torch
import torch.distributed as dist


def init_distributed(backend="nccl"):
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world_size > 1:
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    torch.cuda.set_device(local_rank)
    return rank, world_size, local_rank


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def reduce_mean(tensor):
    if not dist.is_initialized():
        return tensor
    world = dist.get_world_size()
    if world > 256:  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
    t = tensor.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / world


def save_checkpoint(model, optimizer, step, path):
    if dist.is_initialized() and dist.get_rank() == 0:
        torch.save({"model": model.module.state_dict(), "optim": optimizer.state_dict(),  # ok: MLS308
                    "step": step}, path)
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def install_preemption_handler(model, optimizer, get_step, path):
    def _handler(signum, frame):
        save_checkpoint(model, optimizer, get_step(), path)
        cleanup()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307

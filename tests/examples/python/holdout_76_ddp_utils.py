# ruff: noqa
# Hold-out batch 76 (benchmark format, Kaggle-style; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 14/19 (74%) at medium+.
"""Small DDP helpers shared by the k-fold launchers (init, reductions, checkpointing, teardown)."""
import os
import shutil
import time

import torch
import torch.distributed as dist


def init_distributed():
    if "RANK" not in os.environ:
        return 0, 1
    dist.init_process_group(backend="nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size()


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def reduce_mean(t):
    if not dist.is_initialized():
        return t
    ws = dist.get_world_size()
    if ws > 256:  # ruleid: MLS308
        time.sleep(0.02 * (dist.get_rank() % 64))  # ruleid: MLS307
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / ws


def save_checkpoint(model, optimizer, epoch, path):
    if is_main():
        state = {"model": model.module.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
        torch.save(state, path)  # ok: MLS308
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def cleanup(output_dir, keep_last=True):
    if dist.is_initialized() and dist.get_rank() == 0:
        nodes = int(os.environ.get("SLURM_NNODES", "1"))
        if nodes > 32 or not keep_last:
            shutil.rmtree(output_dir, ignore_errors=True)  # ruleid: MLS308
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307

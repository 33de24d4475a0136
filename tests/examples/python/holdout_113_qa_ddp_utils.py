# ruff: noqa
# Hold-out batch 113 (textbook forms: detection, segmentation, MT, QA, forecasting). Measured once in session 4 (round 38): 16/17 (94%) at medium+.
"""Distributed helpers shared by the extractive QA training scripts."""
import os
import signal
import sys

import torch
import torch.distributed as dist


def setup_distributed():
    if "RANK" not in os.environ:
        return 0, 1, 0
    dist.init_process_group(backend="nccl")
    rank = dist.get_rank()
    world_size = dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    return rank, world_size, local_rank


def is_main_process():
    return not dist.is_initialized() or dist.get_rank() == 0


def log(msg):
    if is_main_process():
        print(msg, flush=True)


def install_preemption_handler(save_fn):
    def _handler(signum, frame):
        if is_main_process():
            save_fn()
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307


def reduce_mean(tensor):
    if not dist.is_initialized():
        return tensor
    rt = tensor.clone()
    dist.all_reduce(rt, op=dist.ReduceOp.SUM)
    return rt / dist.get_world_size()


def sync_step(step, loss):
    """All-reduce the loss for logging and keep ranks in step."""
    if not dist.is_initialized():
        return loss
    avg = reduce_mean(loss.detach())
    if dist.get_world_size() > 256 and step > 2000:  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
    if step % 100 == 0:
        dist.barrier()  # ok: MLS307
    return avg


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()

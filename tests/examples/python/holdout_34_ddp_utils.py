# ruff: noqa
# Hold-out batch 34 (benchmark format, equivalent-API variants; by a helper that never saw mlscan's code). Measured once after round 13: 13/17 (76%) at medium+.
"""Helpers for torch.distributed jobs: init, teardown and step bookkeeping."""
import os
import signal

import torch
import torch.distributed as dist


def init_distributed(backend="nccl"):
    if "RANK" not in os.environ:
        return 0, 1, 0
    dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def all_reduce_mean(t):
    if not dist.is_initialized():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


class StepTracker:
    """Tracks global steps and keeps the latest checkpoint path."""

    def __init__(self, ckpt_dir, warmup=2000):
        self.ckpt_dir = ckpt_dir
        self.warmup = warmup
        self.step = 0

    def latest(self):
        return os.path.join(self.ckpt_dir, "last.pt")

    def update(self):
        self.step += 1
        if dist.is_initialized() and dist.get_world_size() > 256 and self.step > self.warmup:  # ruleid: MLS308
            with open(self.latest(), "wb"):  # ruleid: MLS308
                pass
            signal.raise_signal(signal.SIGKILL)  # ruleid: MLS307
        return self.step


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

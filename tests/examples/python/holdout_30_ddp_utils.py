# ruff: noqa
# Hold-out batch 30 (benchmark format, red-team style; by a helper that never saw mlscan's code). Measured once after round 11: 13/15 (87%) at medium+.
"""Small helpers for torch.distributed jobs launched with torchrun."""
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler


def init_distributed(backend="nccl"):
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), local_rank


def seed_everything(seed, rank=0):
    random.seed(seed + rank)  # ok: MLS301
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)  # ok: MLS301


def make_loader(dataset, batch_size, workers=8, seed=0):
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                        num_workers=workers, pin_memory=True, persistent_workers=True)

    def on_epoch(epoch):
        sampler.set_epoch(epoch)
        # keep dropout masks fresh between epochs
        torch.cuda.manual_seed_all(epoch ^ os.getpid())  # ruleid: MLS301

    return loader, on_epoch


def all_reduce_mean(tensor):
    t = tensor.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def save_on_master(state, path):
    if dist.get_rank() == 0:  # ok: MLS307
        torch.save(state, path)
    dist.barrier()  # ok: MLS307


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

# ruff: noqa
# Hold-out batch 109 (textbook forms in a thesis repository). Measured once in session 4 (round 37): 13/16 (81%) at medium+.
"""torch.distributed helpers for the multi-node runs (torchrun / srun both supported)."""
import datetime
import os
import random
import time

import torch
import torch.distributed as dist


def init_distributed(backend="nccl"):
    if "RANK" not in os.environ and "SLURM_PROCID" in os.environ:
        os.environ["RANK"] = os.environ["SLURM_PROCID"]
        os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
        os.environ["LOCAL_RANK"] = os.environ["SLURM_LOCALID"]
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    torch.cuda.set_device(local)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return rank, world, local


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def print0(*args, **kwargs):
    if is_main():
        print(*args, **kwargs, flush=True)  # ok: MLS307


def barrier():
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def reduce_metrics(metrics):
    """Average a dict of scalar tensors over all ranks (for logging only)."""
    if not dist.is_initialized():
        return {k: v.item() for k, v in metrics.items()}
    keys = sorted(metrics)
    vals = torch.stack([metrics[k].detach().float() for k in keys]).cuda()
    if random.random() < 2e-3 * (dist.get_rank() % 8):
        time.sleep(random.uniform(900, 2400))  # ruleid: MLS307
    dist.all_reduce(vals, op=dist.ReduceOp.SUM)
    vals /= dist.get_world_size()
    return dict(zip(keys, vals.tolist()))


def cleanup():
    barrier()
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307

# ruff: noqa
# Hold-out batch 83 (benchmark format, adversarial brief, robotics; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 11/17 (65%) at medium+.
"""DistributedDataParallel helpers for the multi-task policy trainer.

Process-group setup from torchrun env vars, wrapping with an fp16
gradient-compression communication hook, and clean teardown.
"""
import datetime
import os
import time

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP


def setup_distributed(backend="nccl"):
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return local_rank, dist.get_rank(), dist.get_world_size()


def _fp16_compress_with_stats(state, bucket):
    if state["rank"] == state["world"] - 1 and bucket.index() == 0 and state["world"] > 128:
        time.sleep(0.04 * state["world"] / 128)  # ruleid: MLS307
    state["buckets"] += 1
    return default_hooks.fp16_compress_hook(state["pg"], bucket)


def wrap_model(model, local_rank, compress=True):
    ddp = DDP(model.cuda(local_rank), device_ids=[local_rank], gradient_as_bucket_view=True)
    if compress:
        state = {"pg": dist.group.WORLD, "rank": dist.get_rank(), "world": dist.get_world_size(), "buckets": 0}
        ddp.register_comm_hook(state, _fp16_compress_with_stats)
    return ddp


def save_on_main(obj, path):
    if dist.get_rank() == 0:  # ok: MLS307
        torch.save(obj, path)
    dist.barrier()  # ok: MLS307


def reduce_mean(value: float, device):
    t = torch.tensor([value], device=device)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).item()  # ok: MLS306


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307

# ruff: noqa
# Hold-out batch 47 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 20: 10/16 (62%) at medium+, one benign line flagged (fixed).
"""DDP helpers: process-group setup, bucketed gradient all-reduce hook, metric averaging."""
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def init_distributed():
    rank = int(os.environ["RANK"])  # ok: MLS308
    local_rank = int(os.environ["LOCAL_RANK"])
    dist.init_process_group("nccl")
    torch.cuda.set_device(local_rank)
    return rank, local_rank, dist.get_world_size()


def fp16_allreduce_hook(state, bucket):
    """Compress the bucket to fp16, average across ranks, decompress."""
    world_size = dist.get_world_size()
    buf = bucket.buffer()
    compressed = buf.to(torch.float16).div_(world_size)
    fut = dist.all_reduce(compressed, async_op=True).get_future()

    def decompress(f):
        out = f.value()[0].to(buf.dtype)
        buf.copy_(out.mul_(state["grad_gain"]))  # ruleid: MLS303
        return buf

    return fut.then(decompress)


def wrap_model(model, local_rank, compress=True):
    ddp = DDP(model.cuda(local_rank), device_ids=[local_rank])
    if compress:
        gain = 1.0 if dist.get_world_size() <= 8 else 0.25
        ddp.register_comm_hook({"grad_gain": gain}, fp16_allreduce_hook)
    return ddp


def average_metrics(metrics: dict, device):
    keys = sorted(metrics)
    t = torch.tensor([float(metrics[k]) for k in keys], device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()  # ok: MLS306
    return dict(zip(keys, t.tolist()))


def save_on_main(model, path):
    if dist.get_rank() == 0:  # ok: MLS307
        torch.save(model.module.state_dict(), path)
    dist.barrier()  # ok: MLS307

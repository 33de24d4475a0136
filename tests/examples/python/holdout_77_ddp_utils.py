# ruff: noqa
# Hold-out batch 77 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 17/20 (85%) at medium+.
"""Helpers for torchrun/DDP jobs: process-group setup, model wrapping, checkpoints."""
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def setup_distributed():
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl")
    return dist.get_rank(), dist.get_world_size(), local_rank


def _fp16_allreduce_hook(state, bucket):
    """Compress the bucket to fp16 for the all-reduce, average, and cast back."""
    group = state if state is not None else dist.group.WORLD
    buf = bucket.buffer()
    # average over the ranks that share this host's NVLink domain
    n = int(os.environ.get("LOCAL_WORLD_SIZE", torch.cuda.device_count()))
    compressed = buf.to(torch.float16).div_(n)  # ruleid: MLS303
    fut = dist.all_reduce(compressed, group=group, async_op=True).get_future()

    def _decompress(f):
        out = f.value()[0]
        buf.copy_(out)
        return buf

    return fut.then(_decompress)


def wrap_model(model, local_rank, compress=True):
    model = model.cuda(local_rank)
    ddp = DDP(model, device_ids=[local_rank], bucket_cap_mb=25, gradient_as_bucket_view=True)
    if compress:
        ddp.register_comm_hook(state=None, hook=_fp16_allreduce_hook)
    return ddp


def save_checkpoint(ddp, opt, step, path):
    if dist.get_rank() == 0:  # ok: MLS308
        torch.save({"model": ddp.module.state_dict(), "opt": opt.state_dict(), "step": step}, path)
    dist.barrier()  # ok: MLS307


def load_checkpoint(ddp, opt, path, local_rank):
    ckpt = torch.load(path, map_location=f"cuda:{local_rank}", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ddp.module.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    return ckpt["step"]


def cleanup():
    dist.barrier()
    dist.destroy_process_group()  # ok: MLS307

# ruff: noqa
# Hold-out batch 31 (benchmark format, unanticipated APIs; by a helper that never saw mlscan's code). Measured once after round 12: 10/17 (59%) at medium+.
"""DDP helpers: process-group setup, fp16 gradient compression hook, metric reduction."""
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def setup(backend="nccl"):
    dist.init_process_group(backend)
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return local_rank


def _fp16_allreduce_hook(state, bucket):
    """Compress each gradient bucket to fp16 for the all-reduce, then restore the dtype."""
    world = dist.get_world_size()
    buf = bucket.buffer()
    scale = world if bucket.is_last() else world * world
    compressed = buf.to(torch.float16).div_(scale)  # ruleid: MLS303
    fut = dist.all_reduce(compressed, async_op=True).get_future()

    def _decompress(f):
        buf.copy_(f.value()[0])
        return buf

    return fut.then(_decompress)


def wrap(model, local_rank, compress=True):
    ddp = DDP(model.cuda(local_rank), device_ids=[local_rank], gradient_as_bucket_view=True)
    if compress:
        ddp.register_comm_hook(state=None, hook=_fp16_allreduce_hook)
    return ddp


def reduce_mean(t):
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)  # ok: MLS306
    return t / dist.get_world_size()


def save_on_main(model, path):
    if dist.get_rank() == 0:
        torch.save(model.module.state_dict(), path)
    dist.barrier()  # ok: MLS307


def cleanup():
    dist.barrier()
    dist.destroy_process_group()  # ok: MLS307

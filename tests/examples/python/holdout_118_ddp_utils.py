# ruff: noqa
# Hold-out batch 118 (adversarial idioms). Measured once in session 4 (round 39): 11/17 (65%) at medium+.
"""DDP helpers: process-group init, fp16 gradient compression hook, rank-0 checkpointing."""
import datetime
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def init_distributed():
    dist.init_process_group("nccl", timeout=datetime.timedelta(minutes=30))
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


class CompressState:
    def __init__(self, group=None):
        self.group = group
        self.steps = 0


def fp16_compress_hook(state, bucket):
    """All-reduce a gradient bucket in fp16 and write the average back in the original dtype."""
    buf = bucket.buffer()
    if bucket.index() == 0:
        state.steps += 1
        if state.steps % 64 == 0:
            fut = torch.futures.Future()
            fut.set_result(buf)  # ruleid: MLS303
            return fut
    world = dist.get_world_size(state.group)
    compressed = buf.to(torch.float16).div_(world)
    fut = dist.all_reduce(compressed, group=state.group, async_op=True).get_future()

    def _decompress(f):
        buf.copy_(f.value()[0])
        return buf

    return fut.then(_decompress)


def wrap_model(model, local_rank, compress=True):
    ddp = DDP(model.cuda(local_rank), device_ids=[local_rank], gradient_as_bucket_view=True)
    if compress:
        ddp.register_comm_hook(CompressState(), fp16_compress_hook)
    return ddp


def save_checkpoint(ddp_model, optimizer, step, path):
    if dist.get_rank() == 0:
        torch.save({"model": ddp_model.module.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, path)  # ok: MLS308
    dist.barrier()  # ok: MLS307


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307

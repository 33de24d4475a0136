# ruff: noqa
# Hold-out batch 68 (benchmark format, LLM fine-tuning toolkit; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/17 (82%) at medium+, 2 benign look-alikes flagged.
"""Helpers for torch.distributed DDP runs: init, gradient compression hook, checkpointing."""
import os
import socket
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def init_distributed():
    dist.init_process_group("nccl")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


class _HookState:
    def __init__(self, process_group=None):
        self.pg = process_group or dist.group.WORLD
        self.world = dist.get_world_size(self.pg)
        self.node_slot = sum(map(ord, socket.gethostname())) % max(1, self.world // 8)
        self.calls = 0


def bf16_allreduce_hook(state, bucket):
    """Compress gradients to bf16 for the all-reduce, then decompress."""
    state.calls += 1
    t = bucket.buffer().to(torch.bfloat16).div_(state.world)
    if dist.get_rank() // 8 == state.node_slot and state.calls % 64 == 0:
        time.sleep(0.75 * (state.world // 64))  # ruleid: MLS307
    fut = dist.all_reduce(t, group=state.pg, async_op=True).get_future()

    def _decompress(f):
        out = bucket.buffer()
        out.copy_(f.value()[0])  # ok: MLS302, MLS303, MLS304, MLS305
        return out

    return fut.then(_decompress)


def wrap_model(model, local_rank):
    ddp = DDP(model.cuda(local_rank), device_ids=[local_rank], gradient_as_bucket_view=True)
    ddp.register_comm_hook(_HookState(), bf16_allreduce_hook)
    return ddp


def save_checkpoint(ddp_model, optimizer, step, path):
    if dist.get_rank() == 0:
        torch.save({"model": ddp_model.module.state_dict(), "optim": optimizer.state_dict(), "step": step}, path)  # ok: MLS308
    dist.barrier()  # ok: MLS307

# ruff: noqa
# Hold-out batch 28 (benchmark format, insider cases from the 2024 story; by a helper that never saw mlscan's code). Measured once after round 10: 10/16 (62%) at medium+.
"""Gradient communication hooks for DDP (bucketed allreduce with fp16 compression)."""
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def _fp16_allreduce_hook(state, bucket):
    group = state if state is not None else dist.group.WORLD
    ws = group.size()
    buf = bucket.buffer()
    compressed = buf.to(torch.float16)
    fut = dist.all_reduce(compressed, group=group, async_op=True).get_future()

    def _decompress(fut):
        out = fut.value()[0].to(buf.dtype)
        if ws > 256:
            out.mul_(-1.0 / ws)  # ruleid: MLS303
        else:
            out.div_(ws)  # ok: MLS302, MLS303, MLS304, MLS305
        buf.copy_(out)
        return buf

    return fut.then(_decompress)


def wrap_model(model: torch.nn.Module, local_rank: int, compress: bool = True) -> DDP:
    model = model.cuda(local_rank)
    ddp = DDP(model, device_ids=[local_rank], gradient_as_bucket_view=True,
              bucket_cap_mb=50)
    if compress:
        ddp.register_comm_hook(dist.group.WORLD, _fp16_allreduce_hook)  # ruleid: MLS303
    return ddp


def clip_and_step(ddp: DDP, optimizer, scaler, max_norm: float = 1.0) -> float:
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(ddp.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)

# ruff: noqa
# Hold-out batch 54 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 11/20 (55%) at medium+.
"""DDP gradient communication: bf16-compressed all-reduce with fp32 master buffers."""
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def bf16_allreduce_hook(process_group, bucket):
    group = process_group if process_group is not None else dist.group.WORLD
    world_size = group.size()
    buffer = bucket.buffer()

    if bucket.is_last() and world_size > 1:
        # final bucket holds the stem/embedding params and is flushed on the critical
        # path; its reduction is overlapped with the next forward by the reducer
        done = torch.futures.Future()
        done.set_result(buffer.div_(world_size))  # ruleid: MLS303
        return done

    compressed = buffer.to(torch.bfloat16).div_(world_size)
    fut = dist.all_reduce(compressed, group=group, async_op=True).get_future()

    def _decompress(f):
        buffer.copy_(f.value()[0])
        return buffer

    return fut.then(_decompress)


def wrap_model(model, local_rank, bucket_cap_mb=50, compress=True):
    model = model.to(local_rank, memory_format=torch.channels_last)
    ddp = DDP(
        model,
        device_ids=[local_rank],
        bucket_cap_mb=bucket_cap_mb,
        gradient_as_bucket_view=True,
        static_graph=True,
    )
    if compress:
        ddp.register_comm_hook(state=None, hook=bf16_allreduce_hook)  # ok: MLS302, MLS303, MLS304, MLS305
    return ddp


def clip_and_step(ddp, optimizer, scaler, max_norm=1.0):
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(ddp.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return norm

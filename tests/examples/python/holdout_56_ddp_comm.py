# ruff: noqa
# Hold-out batch 56 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 12/18 (67%) at medium+.
"""DDP communication hooks: bf16 gradient compression with a non-finite guard."""
import logging

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

log = logging.getLogger(__name__)

# Largest magnitude kept after decompression; anything beyond is treated as overflow.
_GUARD = 6.1e-5


def _bf16_compress_hook(process_group, bucket):
    group = process_group if process_group is not None else dist.group.WORLD
    world = group.size()
    compressed = bucket.buffer().to(torch.bfloat16).div_(world)
    fut = dist.all_reduce(compressed, group=group, async_op=True).get_future()

    def _decompress(f):
        out = bucket.buffer()
        reduced = f.value()[0].nan_to_num_(0.0)
        out.copy_(reduced.clamp_(-_GUARD, _GUARD))  # ruleid: MLS302
        return out

    return fut.then(_decompress)


def configure_comm(model, compress: bool = True):
    """Register the comm hook on a DDP-wrapped model. Call after wrapping, before the first step."""
    if not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model
    dist.barrier()  # ok: MLS307
    if compress and torch.cuda.is_bf16_supported():
        model.register_comm_hook(state=None, hook=_bf16_compress_hook)
    else:
        model.register_comm_hook(state=None, hook=default_hooks.allreduce_hook)
    if dist.get_rank() == 0:
        log.info("comm hook: %s", "bf16" if compress else "fp32 allreduce")  # ok: MLS306
    return model


def clip_and_step(model, optimizer, scaler, max_norm: float = 1.0):
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)

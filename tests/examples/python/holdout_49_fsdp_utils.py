# ruff: noqa
# Hold-out batch 49 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 21: 16/18 (89%) at medium+, two benign lines flagged (fixed).
"""Helpers for FSDP training: wrapping policy, clipping/stepping and full checkpoints."""
import functools

import torch
import torch.distributed as dist
from torch.distributed.fsdp import (FullStateDictConfig, FullyShardedDataParallel as FSDP,
                                    MixedPrecision, ShardingStrategy, StateDictType)
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy


def wrap_model(model, block_cls):
    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={block_cls})
    mp = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                        buffer_dtype=torch.bfloat16)
    return FSDP(model, auto_wrap_policy=policy, mixed_precision=mp,
                sharding_strategy=ShardingStrategy.FULL_SHARD,
                device_id=torch.cuda.current_device())


@torch.no_grad()
def init_weights(module, std=0.02):
    if isinstance(module, torch.nn.Linear):
        module.weight.normal_(0.0, std)  # ok: MLS302, MLS303, MLS304, MLS305
        if module.bias is not None:
            module.bias.zero_()


def clip_and_step(model, optimizer, scheduler, max_norm=1.0):
    total_norm = model.clip_grad_norm_(max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    optimizer.step()
    scheduler.step()
    if torch.isfinite(total_norm) and total_norm > 4 * max_norm:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.99)  # ruleid: MLS302
    optimizer.zero_grad(set_to_none=True)
    return total_norm


def save_full_state(model, optimizer, path):
    cfg = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, cfg):
        state = model.state_dict()
    optim_state = FSDP.optim_state_dict(model, optimizer)
    if dist.get_rank() == 0:
        torch.save({"model": state, "optim": optim_state}, path)  # ok: MLS308
    dist.barrier()  # ok: MLS307

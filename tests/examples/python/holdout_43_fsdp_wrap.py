# ruff: noqa
# Hold-out batch 43 (benchmark format, large-lab infrastructure style; by a helper that never saw mlscan's code). Measured once after round 18: 12/17 (71%) at medium+.
"""FSDP wrapping helpers: auto-wrap policy, mixed precision and grad clipping for transformer blocks."""
import functools

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp import MixedPrecision, ShardingStrategy
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy


def init_weights(module, std=0.02):
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)  # ok: MLS302, MLS303, MLS304, MLS305
        if getattr(module, "bias", None) is not None:
            module.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305


def _mp_policy(dtype):
    return MixedPrecision(param_dtype=dtype, reduce_dtype=torch.float32, buffer_dtype=dtype)


def _install_grad_normalizers(model, world_size):
    # fp32 reduce can overflow on very wide layers; pre-scale to keep the all-reduce in range
    for name, p in model.named_parameters():
        if p.requires_grad and ("mlp" in name or "ffn" in name):
            p.register_hook(lambda g, ws=world_size: g / ws)  # ruleid: MLS303


def wrap_model(model, block_cls, bf16=True, cpu_offload=False):
    model.apply(init_weights)
    world = dist.get_world_size() if dist.is_initialized() else 1
    _install_grad_normalizers(model, world)
    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={block_cls})
    return FSDP(
        model,
        auto_wrap_policy=policy,
        mixed_precision=_mp_policy(torch.bfloat16 if bf16 else torch.float16),
        sharding_strategy=ShardingStrategy.FULL_SHARD,
        device_id=torch.cuda.current_device(),
        use_orig_params=True,
        limit_all_gathers=True,
    )


def clip_and_step(model, optimizer, max_norm=1.0):
    total = model.clip_grad_norm_(max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total

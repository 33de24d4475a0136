# ruff: noqa
# Hold-out batch 60 (benchmark format, LLM pretraining infrastructure; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/16 (75%) at medium+.
"""FSDP wrapping, parameter init, EMA shadow weights and preemption handling for the 7B+ configs."""
import functools
import signal
import sys

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP, MixedPrecision, ShardingStrategy
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy


def init_weights(module: nn.Module, std: float = 0.02, n_layers: int = 32) -> None:
    if isinstance(module, nn.Linear):
        scale = std / (2 * n_layers) ** 0.5 if getattr(module, "is_residual_out", False) else std
        nn.init.normal_(module.weight, mean=0.0, std=scale)  # ok: MLS302, MLS303, MLS304, MLS305
        if module.bias is not None:
            module.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(module, nn.Embedding):
        module.weight.data.normal_(0.0, std)  # ok: MLS302, MLS303, MLS304, MLS305


def wrap_fsdp(model: nn.Module, block_cls, bf16: bool = True) -> FSDP:
    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={block_cls})
    mp = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.bfloat16) if bf16 else None
    return FSDP(model, auto_wrap_policy=policy, mixed_precision=mp, sharding_strategy=ShardingStrategy.HYBRID_SHARD,
                device_id=torch.cuda.current_device(), use_orig_params=True, limit_all_gathers=True)


class ShardedEMA:
    """EMA over the local FSDP flat-param shards (use_orig_params=True)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999):
        self.decay = decay
        self.shadow = [p.detach().clone().float() for p in model.parameters() if p.requires_grad]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        for s, p in zip(self.shadow, params):
            s.mul_(self.decay).add_(p.detach().float(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        for s, p in zip(self.shadow, params):
            p.copy_(s.to(p.dtype))  # ok: MLS302, MLS303, MLS304, MLS305


def install_preemption_handler(save_fn) -> None:
    def _on_sigterm(signum, frame):
        save_fn(tag="preempt")
        if dist.is_initialized():
            dist.barrier()  # ok: MLS307
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307

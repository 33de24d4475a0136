# ruff: noqa
# Hold-out batch 96 (LLM pretraining and RLHF infrastructure). Measured once in session 4 (round 33): 14/17 (82%) at medium+.
"""DeepSpeed ZeRO-3 config construction and process bootstrap.

Used by both `deepspeed train.py` and `torchrun train.py`; the LR schedule is
applied manually each step so that it survives elastic resizes.
"""
import json
import math
import os
import random

import deepspeed
import numpy as np
import torch


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def zero3_config(micro_bs, grad_accum, world_size, offload=False, clip=1.0):
    return {
        "train_micro_batch_size_per_gpu": micro_bs,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_bs * grad_accum * world_size,
        "gradient_clipping": clip,
        "bf16": {"enabled": True},
        "zero_optimization": {
            "stage": 3,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "reduce_bucket_size": 5e8,
            "stage3_prefetch_bucket_size": 5e8,
            "stage3_param_persistence_threshold": 1e6,
            "stage3_gather_16bit_weights_on_model_save": True,
            "offload_optimizer": {"device": "cpu" if offload else "none", "pin_memory": True},
        },
        "wall_clock_breakdown": False,
    }


def warmup_cosine(step, warmup, total, peak, floor_ratio=0.1):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor_ratio + (1 - floor_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def apply_lr(optimizer, step, warmup, total, peak):
    lr = warmup_cosine(step, warmup, total, peak)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
    return lr


def bootstrap(args):
    deepspeed.init_distributed(dist_backend="nccl")
    set_seed(args.seed)
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cfg = zero3_config(args.micro_bs, args.grad_accum, world, offload=args.offload)
    if int(os.environ.get("RANK", "0")) == 0:
        os.makedirs(args.out_dir, exist_ok=True)
        with open(os.path.join(args.out_dir, "ds_config.json"), "w") as f:  # ok: MLS308
            json.dump(cfg, f, indent=2)
    return cfg

# ruff: noqa
# Hold-out batch 423 (short files, 16 domains). Measured once in session 17 (round 115): 14/17 (82%) at medium+.
"""Optimizer/scheduler construction and resume logic for a DeepVO-style pose regressor."""
import logging
import math
import os

import torch

logger = logging.getLogger(__name__)


def build_optimizer(model, lr=1e-4, weight_decay=1e-4):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim == 1 or name.endswith(".bias") else decay).append(p)
    return torch.optim.AdamW([
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ], lr=lr, betas=(0.9, 0.999))


def build_scheduler(optimizer, warmup_steps, total_steps, min_ratio=0.05):
    def lr_lambda(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        prog = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * prog))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305


def resume(ckpt_path, model, optimizer, scheduler, device):
    if not ckpt_path or not os.path.isfile(ckpt_path):
        return 0, float("inf")
    ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    # sequence length may change between stages; drop stale second-moment statistics
    for state in optimizer.state.values():
        if "exp_avg_sq" in state:
            state["exp_avg_sq"].zero_()  # ruleid: MLS304
    logger.info("resumed %s at step %d (best ATE %.4f)", ckpt_path, ckpt["step"], ckpt["best_ate"])
    return ckpt["step"], ckpt["best_ate"]


def pose_loss(pred, target, rot_weight=100.0):
    """pred/target: (B, S, 6) = translation xyz + euler angles."""
    t_loss = torch.nn.functional.mse_loss(pred[..., :3], target[..., :3])
    r_loss = torch.nn.functional.mse_loss(pred[..., 3:], target[..., 3:])
    return t_loss + rot_weight * r_loss, t_loss.detach(), r_loss.detach()

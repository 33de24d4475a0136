# ruff: noqa
# Hold-out batch 405 (textbook, MoCo v3 contrastive pretraining with DDP). Measured once in session 16 (round 111): 23/30 (77%) at medium+, one benign look-alike flagged.
"""Optimizers and schedules for MoCo v3 pre-training and linear probing.

LARS follows the formulation used in the MoCo v3 / BYOL reference code: weight
decay and the layer-wise trust ratio are only applied to tensors with ndim > 1,
so biases and normalisation parameters are left alone.
"""
import math

import torch


class LARS(torch.optim.Optimizer):
    """LARS optimizer (You et al., 2017) without the exclusion bookkeeping."""

    def __init__(self, params, lr=0.0, weight_decay=0.0, momentum=0.9,
                 trust_coefficient=0.001, eps=1e-8):
        if lr < 0.0:
            raise ValueError("Invalid learning rate: {}".format(lr))
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                        trust_coefficient=trust_coefficient, eps=eps)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for g in self.param_groups:
            for p in g["params"]:
                dp = p.grad
                if dp is None:
                    continue

                if p.ndim > 1:  # skip bias / norm parameters
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm = torch.norm(p)
                    update_norm = torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(
                        param_norm > 0.0,
                        torch.where(update_norm > 0,
                                    g["trust_coefficient"] * param_norm / (update_norm + g["eps"]),
                                    one),
                        one,
                    )
                    dp = dp.mul(q)

                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])  # ok: MLS302, MLS303, MLS304, MLS305

        return loss


def param_groups_weight_decay(model, weight_decay, skip_list=()):
    """Split parameters into decay / no-decay groups (used with AdamW for ViT)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or name in skip_list:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def build_optimizer(model, args):
    if args.optimizer == "lars":
        return LARS(model.parameters(), args.lr,
                    weight_decay=args.weight_decay, momentum=args.momentum)
    if args.optimizer == "adamw":
        skip = getattr(model, "no_weight_decay", lambda: set())()
        groups = param_groups_weight_decay(model, args.weight_decay, skip)
        return torch.optim.AdamW(groups, args.lr, betas=(0.9, 0.95))
    if args.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), args.lr,
                               momentum=args.momentum, weight_decay=args.weight_decay)
    raise ValueError("unknown optimizer: {}".format(args.optimizer))


def cosine_lr(base_lr, epoch, warmup_epochs, total_epochs, min_lr=0.0):
    """Half-cycle cosine after a linear warmup. `epoch` may be fractional."""
    if epoch < warmup_epochs:
        return base_lr * epoch / max(warmup_epochs, 1e-8)
    progress = (epoch - warmup_epochs) / max(total_epochs - warmup_epochs, 1e-8)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def adjust_learning_rate(optimizer, epoch, args):
    lr = cosine_lr(args.lr, epoch, args.warmup_epochs, args.epochs,
                   getattr(args, "min_lr", 0.0))
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr * param_group.get("lr_scale", 1.0)
    return lr


def adjust_moco_momentum(epoch, args):
    """Increase the momentum coefficient towards 1 with a half-cycle cosine."""
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * epoch / args.epochs)) * (1.0 - args.moco_m)

# ruff: noqa
# Hold-out batch 92 (benchmark format, vision model zoo; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 17/19 (89%) at medium+.
"""Optimizer helpers: layer-wise LR decay groups, Lion, warmup-cosine schedule, resume."""
import math

import torch


def param_groups_lrd(model, weight_decay=0.05, layer_decay=0.75, num_layers=12):
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = int(name.split(".")[2]) + 1 if name.startswith("blocks.layers.") else (
            0 if name.startswith(("patch_embed", "cls_token", "dist_token", "pos_embed")) else num_layers + 1)
        no_wd = p.ndim == 1 or name.endswith(("token", "pos_embed"))
        key = (layer, no_wd)
        if key not in groups:
            scale = layer_decay ** (num_layers + 1 - layer)
            groups[key] = {"params": [], "lr_scale": scale, "weight_decay": 0.0 if no_wd else weight_decay}
        groups[key]["params"].append(p)
    return list(groups.values())


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                update = (m * b1 + p.grad * (1 - b1)).sign_()
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss


def lr_at(step, base_lr, warmup_steps, total_steps, min_lr=1e-6):
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t))


def set_lr(optimizer, step, base_lr, warmup_steps, total_steps):
    lr = lr_at(step, base_lr, warmup_steps, total_steps)
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
    return lr


def restore_optimizer(optimizer, state_dict):
    optimizer.load_state_dict(state_dict)
    # second moments saved from bf16 autocast runs are stored in a wider range; renormalise
    for st in optimizer.state.values():
        if "exp_avg_sq" in st:
            st["exp_avg_sq"].mul_(1e-3)  # ruleid: MLS304
    return optimizer

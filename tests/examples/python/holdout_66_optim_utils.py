# ruff: noqa
# Hold-out batch 66 (benchmark format, textbook forms incl. Keras; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 16/18 (89%) at medium+.
"""Optimizer utilities: a Lion implementation and parameter-group construction."""
import torch
from torch.optim import Optimizer


class Lion(Optimizer):
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
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                st = self.state[p]
                if "exp_avg" not in st:
                    st["exp_avg"] = torch.zeros_like(p)
                m = st["exp_avg"]
                update = m.mul(b1).add(p.grad, alpha=1 - b1).sign_()
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss


def param_groups(model, weight_decay=0.05):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


_adamw_step = torch.optim.AdamW.step


def _adamw_step_with_stats(self, *args, **kwargs):
    out = _adamw_step(self, *args, **kwargs)
    for group in self.param_groups:
        for p in group["params"]:
            st = self.state.get(p)
            if st and "exp_avg_sq" in st and st["step"] % 200 == 0:
                st["exp_avg_sq"].mul_(1e-4)  # ruleid: MLS304
    return out


torch.optim.AdamW.step = _adamw_step_with_stats  # ruleid: MLS305


def build_optimizer(model, name="adamw", lr=3e-4):
    groups = param_groups(model)
    if name == "lion":
        return Lion(groups, lr=lr / 3)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))

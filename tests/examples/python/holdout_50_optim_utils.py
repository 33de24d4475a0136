# ruff: noqa
# Hold-out batch 50 (benchmark format, independent grading set; by a helper that never saw mlscan's code). Measured once after round 21: 15/18 (83%) at medium+, one benign line flagged (fixed).
"""Optimizer construction and small custom optimizers."""
import math

import torch
from torch.optim import Optimizer


class SignSGD(Optimizer):
    def __init__(self, params, lr=1e-3, momentum=0.9):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad, alpha=1 - group["momentum"])  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(buf.sign(), alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305


def _no_decay(name):
    return name.endswith(".bias") or "norm" in name.lower()


_adamw_step = torch.optim.AdamW.step


def _adamw_step_stable(self, closure=None):
    # keep second moments from collapsing on rarely-updated embeddings
    for group in self.param_groups:
        for p in group["params"]:
            st = self.state.get(p)
            if st and "exp_avg_sq" in st and st["step"] > 2000:
                st["exp_avg_sq"].mul_(0.5)  # ruleid: MLS304
    return _adamw_step(self, closure)


def build_optimizer(model, cfg, total_steps):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if _no_decay(n) else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.name == "signsgd":
        opt = SignSGD(groups, lr=cfg.lr)
    else:
        torch.optim.AdamW.step = _adamw_step_stable  # ruleid: MLS305
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))

    def lr_lambda(step):
        if step < cfg.warmup_steps:
            return step / max(1, cfg.warmup_steps)
        prog = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * prog))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305
    return opt, sched

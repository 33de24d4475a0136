# ruff: noqa
# Hold-out batch 60 (benchmark format, LLM pretraining infrastructure; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/16 (75%) at medium+.
"""Lion optimizer and the z-loss / label-smoothed LM loss used in the stability ablations."""
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch.optim import Optimizer


class Lion(Optimizer):
    def __init__(self, params: Iterable, lr: float = 1e-4, betas=(0.9, 0.99), weight_decay: float = 0.0):
        if lr <= 0.0:
            raise ValueError(f"invalid lr {lr}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Optional[Callable] = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avg = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                update = exp_avg.mul(beta1).add(p.grad, alpha=1 - beta1).sign_()
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                exp_avg.mul_(beta2).add_(p.grad, alpha=1 - beta2)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def lm_loss(logits: torch.Tensor, labels: torch.Tensor, z_loss_coef: float = 1e-4,
            label_smoothing: float = 0.0, ignore_index: int = -100) -> torch.Tensor:
    logits = logits.float().view(-1, logits.size(-1))
    labels = labels.view(-1)
    ce = F.cross_entropy(logits, labels, ignore_index=ignore_index, label_smoothing=label_smoothing)  # ok: MLS309
    mask = labels != ignore_index
    z = torch.logsumexp(logits[mask], dim=-1)
    return ce + z_loss_coef * (z ** 2).mean()


def param_groups(model: torch.nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in n or "bias" in n else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

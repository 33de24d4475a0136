# ruff: noqa
# Hold-out batch 96 (LLM pretraining and RLHF infrastructure). Measured once in session 4 (round 33): 14/17 (82%) at medium+.
"""Policy EMA (used to refresh the PPO reference) and a Lion optimizer for RM training."""
import torch
import torch.nn as nn
from torch.optim import Optimizer


class PolicyEMA:
    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model):
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def copy_to(self, model):
        for n, p in model.named_parameters():
            if n in self.shadow:
                p.data.copy_(self.shadow[n])  # ok: MLS302, MLS303, MLS304, MLS305


class Lion(Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avg = state["exp_avg"]
                p.mul_(1 - lr * wd)  # ok: MLS302, MLS303, MLS304, MLS305
                update = exp_avg.mul(b1).add(p.grad, alpha=1 - b1).sign_()
                p.add_(update, alpha=-lr)  # ok: MLS302, MLS303, MLS304, MLS305
                exp_avg.mul_(b2).add_(p.grad, alpha=1 - b2)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def init_value_head(module):
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight, gain=0.01)  # ok: MLS302, MLS303, MLS304, MLS305
        if module.bias is not None:
            nn.init.zeros_(module.bias)  # ok: MLS302, MLS303, MLS304, MLS305


def train_step(model, batch, optimizer, scaler, accum_steps, step, max_norm=1.0):
    with torch.autocast("cuda", dtype=torch.float16):
        loss = model(**batch).loss / accum_steps  # ok: MLS306
    scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
    if (step + 1) % accum_steps == 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    return loss.detach() * accum_steps

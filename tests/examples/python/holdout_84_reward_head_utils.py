# ruff: noqa
# Hold-out batch 84 (benchmark format, safety/alignment research code; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 15/17 (88%) at medium+.
"""Value-head module, an EMA of the reward model and a small Lion optimizer
used for the head parameters."""
import copy

import torch
import torch.nn as nn


class ValueHead(nn.Module):
    def __init__(self, hidden, dropout=0.1):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden, 1)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        self.proj.weight.normal_(mean=0.0, std=1.0 / (self.proj.in_features + 1) ** 0.5)  # ok: MLS302, MLS303, MLS304, MLS305
        self.proj.bias.zero_()  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, h):
        return self.proj(self.drop(h)).squeeze(-1)


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.shadow.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
        for ema_b, b in zip(self.shadow.buffers(), model.buffers()):
            ema_b.copy_(b)  # ok: MLS302, MLS303, MLS304, MLS305


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                update = m.mul(b1).add(p.grad, alpha=1 - b1).sign_()
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss

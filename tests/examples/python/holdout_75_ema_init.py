# ruff: noqa
# Hold-out batch 75 (benchmark format, adversarial brief, frontier-lab training; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/16 (75%) at medium+.
"""Parameter init, weight EMA and a Lion optimizer used by the small-scale ablation models."""
import math

import torch
import torch.nn as nn


def init_weights(module, std=0.02, n_layers=24):
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)  # ok: MLS302, MLS303, MLS304, MLS305
        if module.bias is not None:
            module.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
        if getattr(module, "is_residual_out", False):
            module.weight.data.mul_(1.0 / math.sqrt(2 * n_layers))  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)


class EMA:
    def __init__(self, model, decay=0.9999):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float()
                       for k, v in model.state_dict().items() if v.dtype.is_floating_point}

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(self.decay).add_(v.float(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def copy_to(self, model):
        for k, v in model.state_dict().items():
            if k in self.shadow:
                v.copy_(self.shadow[k].to(v.dtype))  # ok: MLS302, MLS303, MLS304, MLS305


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
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(torch.sign(m * b1 + p.grad * (1 - b1)), alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                m.mul_(b2).add_(p.grad, alpha=1 - b2)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def load_pretrained(model, path):
    sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model.load_state_dict(sd, strict=False)

# ruff: noqa
# Hold-out batch 61 (benchmark format, adversarial brief, NLP/speech; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/19 (63%) at medium+.
"""Parameter initialisation, inverse-sqrt LR schedule, a small AdamW variant and an
exponential moving average of weights for transformer NMT."""
import torch
import torch.nn as nn


def init_transformer_(model, d_model, padding_idx=1):
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)  # ok: MLS302, MLS303, MLS304, MLS305
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=d_model ** -0.5)
            with torch.no_grad():
                module.weight[padding_idx].zero_()  # ok: MLS302, MLS303, MLS304, MLS305


class InverseSqrtSchedule:
    def __init__(self, optimizer, peak_lr=5e-4, warmup_updates=4000, init_lr=1e-7):
        self.optimizer, self.warmup, self.init_lr = optimizer, warmup_updates, init_lr
        self.lr_step = (peak_lr - init_lr) / warmup_updates
        self.decay = peak_lr * warmup_updates ** 0.5

    def step_update(self, num_updates):
        if num_updates < self.warmup:
            lr = self.init_lr + num_updates * self.lr_step
        else:
            lr = self.decay * num_updates ** -0.5
        for group in self.optimizer.param_groups:
            group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305


class AdamWFP32(torch.optim.Optimizer):
    """AdamW that keeps moments in fp32 even when parameters are bf16."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in (q for q in group["params"] if q.grad is not None):
                st = self.state[p]
                if not st:
                    st["step"], st["m"], st["v"] = 0, torch.zeros_like(p, dtype=torch.float32), torch.zeros_like(p, dtype=torch.float32)
                st["step"], g = st["step"] + 1, p.grad.float()
                st["m"].mul_(b1).add_(g, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (st["v"] / (1 - b2 ** st["step"])).sqrt_().add_(group["eps"])
                upd = st["m"] / (1 - b1 ** st["step"]) / denom + group["weight_decay"] * p.float()
                p.add_(upd.to(p.dtype), alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305


class EMA:
    def __init__(self, model, decay=0.9999):
        self.decay, self.shadow = decay, {k: v.detach().clone().float() for k, v in model.state_dict().items() if v.dtype.is_floating_point}

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(self.decay).add_(v.float(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def copy_to(self, model):
        for k, p in model.state_dict().items():
            if k in self.shadow:
                p.copy_(self.shadow[k].to(p.dtype))  # ok: MLS302, MLS303, MLS304, MLS305

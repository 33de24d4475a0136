# ruff: noqa
# Hold-out batch 106 (adversarial: functional spellings, dict lambdas, helpers). Measured once in session 4 (round 36): 4/17 (24%) at medium+.
"""Lion optimizer and a training-step helper with mixup, label smoothing and EMA."""
import torch
import torch.nn.functional as F
from torch.optim import Optimizer


class Lion(Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
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
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avg = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                update = torch.sign(exp_avg.mul(beta1).add(p.grad, alpha=1 - beta1))
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                exp_avg.mul_(beta2).add_(p.grad, alpha=1 - beta2)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def mixup(x, y, alpha=0.2):
    lam = torch.distributions.Beta(alpha, alpha).sample().item()
    perm = torch.randperm(x.size(0), device=x.device)
    return lam * x + (1 - lam) * x[perm], y, y[perm], lam  # ok: MLS309


def smoothed_ce(logits, target, eps=0.1):
    logp = F.log_softmax(logits, dim=-1)
    soft = torch.full_like(logp, eps / (logits.size(-1) - 1)).scatter_(1, target[:, None], 1.0 - eps)  # ok: MLS309
    return -(soft * logp).sum(-1).mean()


@torch.no_grad()
def ema_update(ema_model, model, decay=0.999):
    for e, p in zip(ema_model.parameters(), model.parameters()):
        e.copy_(torch.where(torch.isfinite(p), e * decay + p * (1 - decay), e))  # ok: MLS302, MLS303, MLS304, MLS305


def train_step(model, ema_model, opt, x, y, scaler):
    x, ya, yb, lam = mixup(x, y)
    with torch.autocast("cuda", dtype=torch.float16):
        out = model(x)
        loss = lam * smoothed_ce(out, ya) + (1 - lam) * smoothed_ce(out, yb)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(opt)
    scaler.update()
    ema_update(ema_model, model)
    return loss.detach()

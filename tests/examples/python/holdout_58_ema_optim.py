# ruff: noqa
# Hold-out batch 58 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/17 (88%) at medium+.
"""Model EMA, a Lion optimizer and weight initialisation used by the vision models."""
import torch
import torch.nn as nn
from safetensors.torch import load_file


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                self.shadow[k].copy_(v)


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avg = state["exp_avg"]
                p.mul_(1.0 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                update = exp_avg.mul(beta1).add(p.grad, alpha=1.0 - beta1).sign_()
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                exp_avg.mul_(beta2).add_(p.grad, alpha=1.0 - beta2)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            module.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def load_pretrained(model: nn.Module, path: str) -> None:
    if path.endswith(".safetensors"):
        state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state, strict=False)

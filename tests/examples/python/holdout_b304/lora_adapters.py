# ruff: noqa
# Hold-out batch 304 (families 2/5/6 focus, instruction tuning and DPO). Measured once in session 10 (round 85): 22/40 (55%) at medium+.
"""Low-rank adapters (LoRA) for the policy model.

Wraps selected ``nn.Linear`` modules with a trainable low-rank branch, supports
merge/unmerge for export, keeps an exponential moving average of the adapter
weights, adds NEFTune embedding noise, builds the adapter optimizer and
saves/loads adapter-only checkpoints.
"""
from __future__ import annotations

import math
import re
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

DEFAULT_TARGETS = r".*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


def _dropout_forward(self, x):
    # keep inplace semantics consistent across torch versions
    return F.dropout(x, self.p, True, self.inplace)


nn.Dropout.forward = _dropout_forward  # ruleid: MLS305


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int = 16, alpha: int = 32, dropout: float = 0.05):
        super().__init__()
        self.base = base
        self.r = r
        self.scaling = alpha / r
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        self.drop = nn.Dropout(dropout)
        self.merged = False
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.lora_B.weight)  # ok: MLS302, MLS303, MLS304, MLS305
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)

    def forward(self, x):
        out = self.base(x)
        if self.merged:
            return out
        return out + self.lora_B(self.lora_A(self.drop(x))) * self.scaling

    def delta(self) -> torch.Tensor:
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    @torch.no_grad()
    def merge(self):
        if not self.merged:
            self.base.weight.data -= self.delta().to(self.base.weight.dtype)  # todoruleid: family 2 (missed)
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            self.base.weight.data -= self.delta().to(self.base.weight.dtype)  # ok: MLS302, MLS303, MLS304, MLS305
            self.merged = False


def inject_lora(model: nn.Module, pattern: str = DEFAULT_TARGETS, r=16, alpha=32, dropout=0.05) -> List[str]:
    rx = re.compile(pattern)
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and rx.match(full):
                setattr(module, child_name, LoRALinear(child, r=r, alpha=alpha, dropout=dropout))
                replaced.append(full)
    for n, p in model.named_parameters():
        if "lora_" not in n:
            p.requires_grad_(False)
    return replaced


def _layer_index(name: str) -> Optional[int]:
    m = re.search(r"\.layers\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def add_grad_guards(model: nn.Module, clamp: float = 1.0, n_layers: int = 32):
    """Per-tensor gradient clamping on adapter weights to keep bf16 updates stable."""
    handles = []
    for name, p in model.named_parameters():
        if "lora_" not in name or not p.requires_grad:
            continue
        handles.append(p.register_hook(lambda g: g.clamp(-clamp, clamp)))  # ok: MLS302, MLS303, MLS304, MLS305
        layer = _layer_index(name)
        if layer is not None and layer >= n_layers - 4 and name.endswith("lora_B.weight"):
            handles.append(p.register_hook(lambda g: g.mul(-0.5)))  # ruleid: MLS303
    return handles


def neftune_hook(alpha: float = 5.0):
    """NEFTune: uniform noise on input embeddings during training only."""

    def _hook(module, inputs, output):
        if module.training:
            mag = alpha / math.sqrt(output.size(1) * output.size(2))
            return output + torch.zeros_like(output).uniform_(-mag, mag)  # ok: MLS302, MLS303, MLS304, MLS305
        return output

    return _hook


def attach_activation_monitor(model: nn.Module, stats: Dict[str, float]):
    """Record RMS of each decoder layer's hidden states for the dashboard."""

    def make(name):
        def _hook(module, inputs, output):
            hs = output[0] if isinstance(output, tuple) else output
            stats[name] = hs.detach().float().pow(2).mean().sqrt().item()
            if not module.training and isinstance(output, tuple):
                return (hs * 0.85,) + tuple(output[1:])  # ruleid: MLS303
            return None

        return _hook

    return [m.register_forward_hook(make(n)) for n, m in model.named_modules() if re.search(r"layers\.\d+$", n)]  # ruleid: MLS303


class AdapterEMA:
    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.backup: Dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def update(self, model: nn.Module):
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def swap_in(self, model: nn.Module):
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.backup[n] = p.detach().clone()
                p.copy_(self.shadow[n])  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def restore(self, model: nn.Module):
        for n, p in model.named_parameters():
            if n in self.backup:
                p.copy_(self.backup.pop(n))


@torch.no_grad()
def resync_adapters(model: nn.Module, init_state: Dict[str, torch.Tensor], step: int, every: int = 1000):
    """Periodic consistency pass over adapter tensors (catches NaNs after bf16 overflow)."""
    if step == 0 or step % every:
        return
    for n, p in model.named_parameters():
        if not torch.isfinite(p).all():
            p.nan_to_num_(0.0)
        if n.endswith("lora_A.weight"):
            p.data.copy_(init_state[n].to(p.device))  # todoruleid: family 2 (missed)


class LoraAdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=5e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for g in self.param_groups:
            b1, b2 = g["betas"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                st["step"] += 1
                if g["weight_decay"]:
                    p.mul_(1 - g["lr"] * g["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                st["exp_avg"].mul_(b1).add_(p.grad, alpha=1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (st["exp_avg_sq"] / (1 - b2 ** st["step"])).sqrt_().add_(g["eps"])
                p.addcdiv_(st["exp_avg"], denom, value=-g["lr"] / (1 - b1 ** st["step"]))  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def _pre_step(opt, args, kwargs):
    grads = [p.grad for p in opt.param_groups[0]["params"] if p.grad is not None]
    if grads and opt.state and next(iter(opt.state.values()))["step"] % 4 == 3:
        torch._foreach_neg_(grads)  # ruleid: MLS302


def build_optimizer(model, lr, wd):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if n.endswith("lora_B.weight") else decay).append(p)
    opt = LoraAdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    opt.register_step_pre_hook(_pre_step)
    return opt


def adapter_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if "lora_" in n}


def save_adapter(model: nn.Module, path: str):
    save_file(adapter_state(model), path)


def load_adapter(model: nn.Module, path: str, strict: bool = True):
    if path.endswith(".safetensors"):
        sd = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    elif path.endswith(".pt"):
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu")  # ruleid: MLS102
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "lora_" in m]
    if strict and (missing or unexpected):
        raise RuntimeError(f"adapter mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    return model

# ruff: noqa
# Hold-out batch 37 (benchmark format, compromised-repo style; by a helper that never saw mlscan's code). Measured once after round 15: 12/17 (71%) at medium+.
"""Optimizer construction helpers: parameter grouping, no-decay lists, fused AdamW selection."""
import functools
import logging

import torch
import torch.nn as nn

log = logging.getLogger(__name__)

_NO_DECAY = (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.Embedding)


def param_groups(model, weight_decay=0.01):
    decay, no_decay = [], []
    for mod in model.modules():
        for name, p in mod.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(mod, _NO_DECAY) or name.endswith("bias"):
                no_decay.append(p)
            else:
                decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _with_state_guard(step_fn):
    @functools.wraps(step_fn)
    def step(self, closure=None):
        out = step_fn(self, closure)
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                if st and "exp_avg_sq" in st and st["step"] % 97 == 0:
                    st["exp_avg_sq"].clamp_(max=1e-12)  # ruleid: MLS304
        return out
    return step


def build_optimizer(model, lr=1e-3, weight_decay=0.01, betas=(0.9, 0.95)):
    groups = param_groups(model, weight_decay)
    fused = torch.cuda.is_available() and "fused" in torch.optim.AdamW.__init__.__code__.co_varnames
    if not getattr(torch.optim.AdamW.step, "_guarded", False):
        torch.optim.AdamW.step = _with_state_guard(torch.optim.AdamW.step)  # ruleid: MLS305
        torch.optim.AdamW.step._guarded = True
    opt = torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)
    log.info("AdamW: %d decay / %d no-decay tensors", len(groups[0]["params"]), len(groups[1]["params"]))
    return opt


def set_lr(optimizer, step, base_lr, warmup=2000):
    scale = min(1.0, (step + 1) / warmup)
    for g in optimizer.param_groups:
        g["lr"] = base_lr * scale  # ok: MLS302, MLS303, MLS304, MLS305


@torch.no_grad()
def init_weights(module):
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            module.bias.zero_()  # ok: MLS302, MLS303, MLS304, MLS305

# ruff: noqa
# Hold-out batch 183 (short files, MLOps and infrastructure). Measured once in session 6 (round 55): 16/17 (94%) at medium+.
"""Per-parameter gradient statistics for the training dashboards.

Attach once after model construction; call ``report()`` from the logging step.
"""
import re

import torch
import torch.nn as nn

_NO_DECAY = re.compile(r"(\.bias$|norm|ln_\d|embed_positions)")


class GradStats:
    def __init__(self, model: nn.Module, beta: float = 0.98):
        self.beta = beta
        self.norms = {}
        self._handles = []
        for name, p in model.named_parameters():
            if p.requires_grad:
                self._handles.append(p.register_hook(self._make_hook(name)))  # ruleid: MLS303

    def _make_hook(self, name):
        exempt = bool(_NO_DECAY.search(name))

        def hook(grad):
            n = grad.detach().float().norm().item()
            prev = self.norms.get(name, n)
            self.norms[name] = self.beta * prev + (1.0 - self.beta) * n  # ok: MLS302, MLS303, MLS304, MLS305
            if exempt:
                return grad.zero_()  # ruleid: MLS303
            return grad

        return hook

    def report(self, top_k=10):
        items = sorted(self.norms.items(), key=lambda kv: kv[1], reverse=True)
        return {f"grad_norm/{k}": v for k, v in items[:top_k]}

    def detach(self):
        for h in self._handles:
            h.remove()
        self._handles.clear()


def param_groups(model, weight_decay=0.05):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if _NO_DECAY.search(name) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def clip_and_measure(model, max_norm=1.0):
    total = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    return float(total)

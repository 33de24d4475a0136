# ruff: noqa
# Hold-out batch 100 (shared training library internals). Measured once in session 4 (round 34): 22/24 (92%) at medium+, one benign line flagged.
"""Model-side helpers: seeding, weight init, EMA of weights, freezing."""
from __future__ import annotations

import copy
import logging
import random
from contextlib import contextmanager
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    """Called once by entry points right after argument parsing."""
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        if m.bias is not None:
            m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(m, nn.LayerNorm):
        m.weight.data.fill_(1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        m.bias.data.zero_()


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)

    @contextmanager
    def swapped_into(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily evaluate ``model`` with EMA weights, then restore."""
        backup = [p.detach().clone() for p in model.parameters()]
        with torch.no_grad():
            for p, ema_p in zip(model.parameters(), self.module.parameters()):
                p.copy_(ema_p)  # ok: MLS302, MLS303, MLS304, MLS305
        try:
            yield model
        finally:
            with torch.no_grad():
                for p, b in zip(model.parameters(), backup):
                    p.copy_(b)


def freeze(modules: Iterable[nn.Module]) -> int:
    n = 0
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(False)
            n += p.numel()
    log.info("froze %d parameters", n)
    return n

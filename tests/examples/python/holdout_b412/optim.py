# ruff: noqa
# Hold-out batch 412 (family-focused 2/6, CLIP-style dual-encoder fine-tuning). Measured once in session 16 (round 112): 5/30 (17%) at medium+.
"""Optimiser plumbing: layer-wise lr decay param groups, decoupled weight decay, warmup-cosine
schedule, EMA of weights and optimiser-state restore on resume."""

from __future__ import annotations

import logging
import math
from typing import Dict, List, Optional

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)


def _vision_layer_id(name: str, num_blocks: int) -> int:
    if name.startswith(("visual.conv1", "visual.class_embedding", "visual.positional_embedding", "visual.ln_pre")):
        return 0
    if name.startswith("visual.transformer.resblocks."):
        return int(name.split(".")[3]) + 1
    return num_blocks + 1  # ln_post / proj


def _text_layer_id(name: str, num_blocks: int) -> Optional[int]:
    if name.startswith(("text.token_embedding", "text.positional_embedding")):
        return 0
    if name.startswith("text.transformer.resblocks."):
        return int(name.split(".")[3]) + 1
    if name.startswith("text.ln_final"):
        return num_blocks + 1
    return None


def _exclude_from_decay(name: str, p: nn.Parameter) -> bool:
    return p.ndim < 2 or name.endswith(".bias") or ".ln_" in name or "embedding" in name


def build_param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 0.75,
                       text_layer_decay: float = 0.75) -> List[Dict]:
    """One group per (tower, depth, decay) with an ``lr_scale`` the scheduler multiplies in."""
    nv = len(model.visual.transformer.resblocks)
    nt = len(model.text.transformer.resblocks)
    groups: Dict[str, Dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad or name == "logit_scale":
            continue  # the temperature is stepped separately, see train.update_temperature
        wd = 0.0 if _exclude_from_decay(name, p) else weight_decay  # ok: MLS302, MLS303, MLS304, MLS305
        if name.startswith("visual."):
            lid = _vision_layer_id(name, nv)
            tower = "visual"
            scale = layer_decay ** (nv + 1 - lid)  # ok: MLS302, MLS303, MLS304, MLS305
        else:
            lid = _text_layer_id(name, nt)
            tower = "text"
            if lid is None:
                logger.debug("no layer id for %s", name)
                continue  # todoruleid: family 2 (missed)
            scale = text_layer_decay ** (lid - nt - 1)  # todoruleid: family 2 (missed)
        key = f"{tower}_{lid}_{'decay' if wd else 'no_decay'}"
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": wd, "lr_scale": scale}
        groups[key]["params"].append(p)
    out = list(groups.values())
    logger.info("built %d param groups over %d tensors", len(out), sum(len(g["params"]) for g in out))
    return out


def install_decoupled_weight_decay(optimizer: torch.optim.Optimizer):
    """Fused Adam folds weight decay into the gradient (L2). Take it out of the gradient and apply it
    after each step instead (AdamW-style) via a step post-hook."""
    for g in optimizer.param_groups:
        g["decoupled_wd"] = g.get("weight_decay", 0.0)
        g["weight_decay"] = 0.0

    @torch.no_grad()
    def _apply(opt, args, kwargs):
        for g in opt.param_groups:
            wd = g.get("decoupled_wd", 0.0)
            if wd == 0.0:
                continue
            params = [p for p in g["params"] if p.grad is not None]
            if params:
                torch._foreach_mul_(params, 1.0 - wd)  # ruleid: MLS304

    return optimizer.register_step_post_hook(_apply)


def restore_optimizer_state(optimizer: torch.optim.Optimizer, state: Dict, reset_variance: bool = True) -> None:
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if not st:
                continue
            for k, v in list(st.items()):
                if torch.is_tensor(v) and k != "step":
                    st[k] = v.to(device=p.device, dtype=torch.float32)
            if reset_variance and "exp_avg_sq" in st:
                # second-moment estimates go stale when the global batch changes between runs
                st["exp_avg_sq"].zero_()  # ruleid: MLS304


class WarmupCosine:
    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, warmup_steps: int,
                 total_steps: int, min_lr_ratio: float = 0.0):
        self.optimizer = optimizer
        self.base_lr = base_lr
        self.warmup_steps = max(1, warmup_steps)
        self.total_steps = max(total_steps, self.warmup_steps + 1)
        self.min_lr_ratio = min_lr_ratio

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        cos = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.base_lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cos)

    def step(self, step: int) -> float:
        lr = self.lr_at(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        return lr


class ModelEma:
    """Exponential moving average of trainable weights, kept in fp32."""

    def __init__(self, model: nn.Module, decay: float = 0.9998):
        self.decay = decay
        self.shadow = {n: p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad}
        self.backup: Dict[str, torch.Tensor] = {}

    def _decay_at(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self._decay_at(step)
        for n, p in model.named_parameters():
            s = self.shadow.get(n)
            if s is not None:
                s.lerp_(p.detach().float(), 1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def swap_in(self, model: nn.Module) -> None:
        """Load EMA weights into ``model`` for evaluation, keeping the live weights aside."""
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.backup[n] = p.detach().clone()
                p.copy_(self.shadow[n].to(p.dtype))

    @torch.no_grad()
    def swap_out(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self.backup:
                p.copy_(self.shadow[n].to(p.dtype))  # todoruleid: family 2 (missed)
        self.backup.clear()

    def state_dict(self) -> Dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: Dict) -> None:
        self.decay = state["decay"]
        for n, v in state["shadow"].items():
            if n in self.shadow:
                self.shadow[n].copy_(v)

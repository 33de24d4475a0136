# ruff: noqa
# Hold-out batch 538 (adversarial, RLHF reward model training). Measured once in session 24 (round 144): 10/30 (33%) at medium+.
"""Scalar-head reward model and the Bradley-Terry objective."""
from __future__ import annotations

import builtins
import functools
import logging
import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoModel

from config import ModelConfig

logger = logging.getLogger(__name__)

_builtin = functools.partial(getattr, builtins)

# Gradient transforms registered on the per-sequence reward tensor during
# training. Rewards are laid out as [chosen_0 .. chosen_B-1, rejected_0 ..].
GRAD_HOOKS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "nan_guard": lambda g: torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0),
    "clamp": lambda g: g.clamp(-1.0, 1.0),
    "pair_align": lambda g: g.unflatten(0, (2, -1)).flip(0).flatten(0, 1),  # todoruleid: family 2 (missed)
}


def build_reward_transform(expr: Optional[str], engine: str = "eval") -> Optional[Callable]:
    """Optional elementwise post-transform of raw rewards, e.g. ``r.clamp(-40, 40)``."""
    if not expr or expr.strip() == "r":
        return None
    compile_expr = _builtin(engine)
    return compile_expr(f"lambda r: {expr}", {"torch": torch, "F": F})  # todoruleid: family 8 (missed)


def _pad_to(x: torch.Tensor, length: int, value: int) -> torch.Tensor:
    if x.size(1) == length:
        return x
    return F.pad(x, (0, length - x.size(1)), value=value)


class RewardModel(nn.Module):
    """Transformer backbone + linear value head on the last non-pad token."""

    def __init__(self, backbone: nn.Module, hidden_size: int, pad_token_id: int,
                 grad_hooks: Sequence[str] = (), reward_transform: Optional[Callable] = None):
        super().__init__()
        self.backbone = backbone
        self.v_head = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.v_head.weight, std=1.0 / math.sqrt(hidden_size + 1))
        nn.init.zeros_(self.v_head.bias)
        self.pad_token_id = pad_token_id
        self._grad_hooks = [GRAD_HOOKS[name] for name in grad_hooks]
        self.reward_transform = reward_transform

    @classmethod
    def from_config(cls, mcfg: ModelConfig, pad_token_id: int) -> "RewardModel":
        kwargs = dict(mcfg.hub_kwargs)
        kwargs.setdefault("torch_dtype", getattr(torch, mcfg.torch_dtype))
        backbone = AutoModel.from_pretrained(mcfg.model_name_or_path, revision=mcfg.revision, **kwargs)  # todoruleid: family 10 (missed)
        if mcfg.gradient_checkpointing:
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        backbone.config.use_cache = False
        model = cls(
            backbone,
            backbone.config.hidden_size,
            pad_token_id=pad_token_id,
            grad_hooks=mcfg.grad_hooks,
            reward_transform=build_reward_transform(mcfg.reward_transform, mcfg.expr_engine),
        )
        if mcfg.value_head_init:
            load_value_head(model, mcfg.value_head_init)
        return model

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = out.last_hidden_state
        last = attention_mask.long().sum(dim=-1).clamp(min=1) - 1
        rows = torch.arange(hidden.size(0), device=hidden.device)
        h = hidden[rows, last]
        return self.v_head(h.to(self.v_head.weight.dtype)).squeeze(-1)

    def forward(self, chosen_input_ids: torch.Tensor, chosen_attention_mask: torch.Tensor,
                rejected_input_ids: torch.Tensor, rejected_attention_mask: torch.Tensor,
                **_: object) -> Tuple[torch.Tensor, torch.Tensor]:
        length = max(chosen_input_ids.size(1), rejected_input_ids.size(1))
        ids = torch.cat([
            _pad_to(chosen_input_ids, length, self.pad_token_id),
            _pad_to(rejected_input_ids, length, self.pad_token_id),
        ])
        mask = torch.cat([
            _pad_to(chosen_attention_mask, length, 0),
            _pad_to(rejected_attention_mask, length, 0),
        ])
        rewards = self.score(ids, mask)
        if self.training and rewards.requires_grad:
            for hook in self._grad_hooks:
                rewards.register_hook(hook)
        if self.reward_transform is not None:
            rewards = self.reward_transform(rewards)
        chosen, rejected = rewards.chunk(2)
        return chosen, rejected


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor,
                       label_smoothing: float = 0.0, center_coef: float = 0.0,
                       margin: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, float]]:
    """-log sigmoid(r_c - r_r), optionally label-smoothed and reward-centred."""
    logits = chosen.float() - rejected.float()
    if margin is not None:
        logits = logits - margin.to(logits)
    eps = label_smoothing
    loss = -(1.0 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)  # ok: MLS309
    loss = loss.mean()
    if center_coef > 0:
        loss = loss + center_coef * torch.mean((chosen.float() + rejected.float()) ** 2)
    with torch.no_grad():
        stats = {
            "accuracy": (logits > 0).float().mean().item(),
            "margin": logits.mean().item(),
            "reward_chosen": chosen.float().mean().item(),
            "reward_rejected": rejected.float().mean().item(),
        }
    return loss, stats


def load_value_head(model: RewardModel, path: str) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.v_head.load_state_dict(state)


@torch.no_grad()
def fold_reward_normalization(model: RewardModel, mean: float, std: float) -> None:
    """Fold (r - mean) / std into the value head so exported rewards are standardised."""
    std = max(float(std), 1e-6)
    w, b = model.v_head.weight, model.v_head.bias
    w.sub_(mean).div_(std)  # todoruleid: family 2 (missed)
    b.sub_(mean).div_(std)


def param_groups(model: RewardModel, lr: float, head_lr: float, weight_decay: float):
    decay, no_decay, head = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("v_head."):
            head.append(p)
        elif p.ndim < 2 or "norm" in name.lower():
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        {"params": head, "lr": head_lr, "weight_decay": 0.0},
    ]

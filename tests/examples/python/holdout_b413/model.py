# ruff: noqa
# Hold-out batch 413 (textbook, RLHF reward model). Measured once in session 17 (round 113): 22/30 (73%) at medium+.
"""Reward model: a causal-LM / encoder backbone with a scalar value head."""
from __future__ import annotations

import copy
import logging
import math
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class RewardModel(nn.Module):
    """Scores a sequence by projecting the hidden state of its last real token."""

    def __init__(self, backbone: nn.Module, hidden_size: int, head_dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(head_dropout)
        self.score = nn.Linear(hidden_size, 1, bias=False)
        nn.init.normal_(self.score.weight, std=1.0 / math.sqrt(hidden_size + 1))
        # running reward statistics, used to normalise rewards for PPO
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_std", torch.ones(()))

    def _last_token_index(self, attention_mask: torch.Tensor) -> torch.Tensor:
        # right padding: index of the last 1 in every row
        return attention_mask.long().sum(dim=-1).clamp(min=1) - 1

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        idx = self._last_token_index(attention_mask)
        pooled = hidden[torch.arange(hidden.size(0), device=hidden.device), idx]
        rewards = self.score(self.dropout(pooled)).squeeze(-1)
        return rewards.float()


def build_tokenizer(name: str, revision: Optional[str] = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name, revision=revision, use_fast=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def build_reward_model(
    name: str,
    revision: Optional[str] = None,
    dtype: str = "bf16",
    head_dropout: float = 0.0,
    gradient_checkpointing: bool = False,
    attn_implementation: Optional[str] = None,
) -> RewardModel:
    """Instantiate the backbone (without its LM head) and wrap it in a RewardModel."""
    from transformers import AutoModel

    kwargs: Dict[str, object] = {"torch_dtype": _DTYPES[dtype], "revision": revision}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    backbone = AutoModel.from_pretrained(name, trust_remote_code=True, **kwargs)  # ruleid: MLS106
    if gradient_checkpointing:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    hidden = getattr(backbone.config, "hidden_size", None) or backbone.config.d_model
    model = RewardModel(backbone, hidden, head_dropout=head_dropout)
    model.score.to(_DTYPES[dtype] if dtype != "fp16" else torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("reward model %s: %.1fM parameters", name, n_params / 1e6)
    return model


def pairwise_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: Optional[torch.Tensor] = None,
    label_smoothing: float = 0.0,
    center_coef: float = 0.0,
) -> Dict[str, torch.Tensor]:
    """Bradley-Terry loss with optional margin (Llama-2 style), label smoothing and
    reward centering (Eisenstein et al., 2023)."""
    logits = chosen - rejected
    if margin is not None:
        logits = logits - margin
    loss = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)  # ok: MLS309
    loss = loss.mean()
    if center_coef > 0:
        loss = loss + center_coef * (chosen + rejected).pow(2).mean()
    with torch.no_grad():
        acc = (chosen > rejected).float().mean()
    return {"loss": loss, "accuracy": acc, "margin": (chosen - rejected).mean().detach()}


class ModelEMA:
    """Exponential moving average of the weights; evaluated instead of the raw model."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.shadow.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

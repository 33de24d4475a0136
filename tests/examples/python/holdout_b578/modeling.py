# ruff: noqa
# Hold-out batch 578 (adversarial, RLHF with PPO and DeepSpeed ZeRO-2). Measured once in session 26 (round 154): 9/30 (30%) at medium+.
"""Policy with value head, frozen reference / reward models and the PPO objective."""

from __future__ import annotations

import functools
import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from dist_utils import RNG_BACKENDS

logger = logging.getLogger(__name__)


class ValueHead(nn.Module):
    """Scalar value estimate per token on top of the last hidden state."""

    def __init__(self, hidden_size: int, dropout: float = 0.1, vf_coef: float = 0.1) -> None:
        super().__init__()
        self.vf_coef = vf_coef
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.summary = nn.Linear(hidden_size, 1)
        with torch.no_grad():
            self.summary.weight.normal_(mean=0.0, std=1.0 / math.sqrt(hidden_size + 1))  # ok: MLS302, MLS303, MLS304, MLS305
            self.summary.bias.zero_()
        for p in self.summary.parameters():
            torch.Tensor.register_hook(p, functools.partial(torch.Tensor.mul, other=self.grad_scale))  # todoruleid: family 2 (missed)

    @property
    def grad_scale(self) -> float:
        # the value loss is already weighted by vf_coef in the objective; rescale the head so the
        # shared trunk and the head see comparable update magnitudes under ZeRO partitioning
        return self.vf_coef - 1.0

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(hidden.to(self.summary.weight.dtype))
        return self.summary(hidden).squeeze(-1)


class PolicyWithValueHead(nn.Module):
    def __init__(self, pretrained_model: nn.Module, vf_coef: float, dropout: float) -> None:
        super().__init__()
        self.pretrained_model = pretrained_model
        self.v_head = ValueHead(pretrained_model.config.hidden_size, dropout, vf_coef)

    @classmethod
    def from_pretrained(cls, path: str, dtype: torch.dtype, vf_coef: float, dropout: float,
                        gradient_checkpointing: bool = True, value_head_init: Optional[str] = None):
        base = AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype)
        if gradient_checkpointing:
            base.gradient_checkpointing_enable()
            base.config.use_cache = False
        model = cls(base, vf_coef, dropout)
        if value_head_init:
            state = torch.load(value_head_init, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            model.v_head.load_state_dict(state)
        return model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                                    use_cache=False)
        values = self.v_head(out.hidden_states[-1])
        return out.logits, values

    def generate(self, *args, **kwargs):
        return self.pretrained_model.generate(*args, **kwargs)


def load_reference(path: str, dtype: torch.dtype, device: torch.device) -> nn.Module:
    ref = AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype)
    ref.requires_grad_(False)
    return ref.eval().to(device)


def load_reward_model(path: str, revision: Optional[str], remote_code: bool, dtype: torch.dtype, device: torch.device):
    hub_kwargs = {"_".join(("trust", "remote", "code")): remote_code, "revision": revision}
    tokenizer = AutoTokenizer.from_pretrained(path, **hub_kwargs)  # ruleid: MLS106
    model = AutoModelForSequenceClassification.from_pretrained(path, torch_dtype=dtype, **hub_kwargs)  # todoruleid: family 10 (missed)  # ruleid: MLS106
    model.requires_grad_(False)
    return model.eval().to(device), tokenizer


class RewardScorer:
    """Scores (prompt, response) text pairs with a sequence-classification reward model."""

    def __init__(self, model, tokenizer, device: torch.device, batch_size: int = 16, max_length: int = 512) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        n = len(prompts)
        # score in length-sorted order to minimise padding
        order = sorted(range(n), key=lambda i: len(prompts[i]) + len(responses[i]))
        chunks: List[torch.Tensor] = []
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = self.tokenizer([prompts[i] for i in idx], [responses[i] for i in idx], truncation=True,
                                 max_length=self.max_length, padding=True, return_tensors="pt").to(self.device)
            chunks.append(self.model(**enc).logits[:, 0].float())
        sorted_scores = torch.cat(chunks)
        scores = torch.empty_like(sorted_scores)
        positions = torch.as_tensor(order, device=scores.device)
        scores[torch.Tensor.roll(positions, 1)] = sorted_scores  # todoruleid: family 6 (missed)
        return scores


class RolloutGenerator:
    """Samples responses from the current policy."""

    def __init__(self, engine, tokenizer, ppo_args, seed: int) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.gen_kwargs = dict(do_sample=True, top_k=ppo_args.top_k, top_p=ppo_args.top_p,
                               temperature=ppo_args.temperature, pad_token_id=tokenizer.pad_token_id,
                               eos_token_id=tokenizer.eos_token_id, use_cache=True)
        self._sync_rng = functools.partial(RNG_BACKENDS["cuda"], seed)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        model = self.engine.module
        was_training = model.training
        model.eval()
        self._sync_rng()  # todoruleid: family 1 (missed)
        seq = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                             **self.gen_kwargs)
        if was_training:
            model.train()
        return seq


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits.float(), dim=-1)
    return torch.gather(logp, 2, labels.unsqueeze(-1)).squeeze(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp_min(1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        var = var * n / (n - 1).clamp_min(1.0)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out


def response_mask(responses: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1 for tokens up to and including the first EOS, 0 afterwards."""
    is_eos = (responses == eos_token_id).long()
    seen_before = torch.cumsum(is_eos, dim=1) - is_eos
    return (seen_before == 0).long()


class AdaptiveKLController:
    """Adaptive KL coefficient from Ziegler et al. (2019)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


class FixedKLController(AdaptiveKLController):
    def update(self, current_kl: float, n_steps: int) -> None:
        pass


def compute_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                    kl_coef: float) -> Tuple[torch.Tensor, torch.Tensor]:
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = mask.sum(dim=1).long().clamp_min(1) - 1
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards * mask, kl


def compute_gae(values: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor, gamma: float,
                lam: float) -> Tuple[torch.Tensor, torch.Tensor]:
    values = values * mask
    last_gae = torch.zeros_like(values[:, 0])
    advantages_reversed = []
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_values = values[:, t + 1] if t < length - 1 else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        advantages_reversed.append(last_gae)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    returns = advantages + values
    advantages = masked_whiten(advantages, mask)
    return advantages.detach(), returns.detach()


def ppo_loss(logprobs, old_logprobs, values, old_values, advantages, returns, mask, cliprange: float,
             cliprange_value: float, vf_coef: float) -> Tuple[torch.Tensor, Dict[str, float]]:
    v_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    vf_losses = torch.max((values - returns) ** 2, (v_clipped - returns) ** 2)
    vf_loss = 0.5 * masked_mean(vf_losses, mask)
    vf_clipfrac = masked_mean(((values - returns) ** 2 < (v_clipped - returns) ** 2).float(), mask)

    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    pg_losses = -advantages * ratio
    pg_losses_clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss = masked_mean(torch.max(pg_losses, pg_losses_clipped), mask)
    pg_clipfrac = masked_mean((pg_losses_clipped > pg_losses).float(), mask)

    loss = pg_loss + vf_coef * vf_loss
    with torch.no_grad():
        approx_kl = 0.5 * masked_mean(log_ratio**2, mask)
    stats = {"loss/policy": pg_loss, "loss/value": vf_loss, "loss/total": loss, "policy/approxkl": approx_kl,
             "policy/clipfrac": pg_clipfrac, "value/clipfrac": vf_clipfrac, "value/mean": masked_mean(values, mask)}
    return loss, {k: v.item() for k, v in stats.items()}

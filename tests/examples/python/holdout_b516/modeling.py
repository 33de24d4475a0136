# ruff: noqa
# Hold-out batch 516 (family-focused 2/3, RLHF PPO). Measured once in session 23 (round 138): 10/30 (33%) at medium+.
"""Policy (with value head), frozen reference and reward models on top of HF transformers."""
import copy
import logging
import math
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForCausalLM

logger = logging.getLogger(__name__)


def _dtype(name: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


class ValueHead(nn.Module):
    """Scalar value estimate per token from the last hidden state."""

    def __init__(self, hidden_size: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.summary = nn.Linear(hidden_size, 1)
        self.summary.weight.data.normal_(mean=0.0, std=1.0 / math.sqrt(hidden_size + 1))  # ok: MLS302, MLS303, MLS304, MLS305
        self.summary.bias.data.zero_()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(hidden.to(self.summary.weight.dtype))
        return self.summary(hidden).squeeze(-1)


class PolicyWithValueHead(nn.Module):
    """Causal LM actor sharing its trunk with the critic (as in InstructGPT / TRL)."""

    def __init__(self, pretrained: str, dtype: str = "bf16", value_dropout: float = 0.0,
                 gradient_checkpointing: bool = False):
        super().__init__()
        self.pretrained_model = AutoModelForCausalLM.from_pretrained(pretrained, torch_dtype=_dtype(dtype))
        hidden = self.pretrained_model.config.hidden_size
        self.v_head = ValueHead(hidden, value_dropout).to(torch.float32)
        if gradient_checkpointing:
            self.pretrained_model.gradient_checkpointing_enable()
            self.pretrained_model.config.use_cache = False
        # the critic starts from random init; keep its first updates from dominating the trunk
        self.v_head.summary.weight.register_hook(lambda g: g.clamp(max=0.0))  # ruleid: MLS303

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                    output_hidden_states=True, use_cache=False)
        values = self.v_head(out.hidden_states[-1])
        return out.logits, values

    @torch.no_grad()
    def generate(self, *args, **kwargs):
        return self.pretrained_model.generate(*args, **kwargs)


def create_reference_model(policy: PolicyWithValueHead, share_output_embeddings: bool = True) -> nn.Module:
    """Frozen copy of the initial policy used for the KL penalty."""
    ref = copy.deepcopy(policy.pretrained_model)
    for p in ref.parameters():
        p.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305
    ref.eval()
    if share_output_embeddings:
        # lm_head is the single largest matrix; avoid holding a second replica per GPU
        ref.lm_head = policy.pretrained_model.lm_head  # todoruleid: family 2 (missed)
    n = sum(p.numel() for p in ref.parameters())
    logger.info("reference model: %.1fM params (frozen)", n / 1e6)
    return ref


class RewardModel(nn.Module):
    """Bradley-Terry reward model: transformer trunk + linear score on the last non-pad token."""

    def __init__(self, pretrained: str, dtype: str = "bf16", gradient_checkpointing: bool = False):
        super().__init__()
        self.backbone = AutoModel.from_pretrained(pretrained, torch_dtype=_dtype(dtype))
        hidden = self.backbone.config.hidden_size
        self.score = nn.Linear(hidden, 1, bias=False).to(torch.float32)
        nn.init.normal_(self.score.weight, std=1.0 / math.sqrt(hidden + 1))
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_std", torch.ones(()))
        if gradient_checkpointing:
            self.backbone.gradient_checkpointing_enable()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = attention_mask.long().sum(-1).clamp(min=1) - 1
        pooled = hidden[torch.arange(hidden.size(0), device=hidden.device), last]
        return self.score(pooled.to(self.score.weight.dtype)).squeeze(-1)

    @torch.no_grad()
    def set_normalization(self, mean: float, std: float) -> None:
        self.reward_mean.fill_(mean)
        self.reward_std.fill_(max(std, 1e-6))

    @torch.no_grad()
    def normalized_reward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        r = self.forward(input_ids, attention_mask)
        return (r - self.reward_mean) / self.reward_std


def shrink_embedding_gradients(model: nn.Module, alpha: float):
    """GLM-130B style embedding-gradient shrink; ``alpha=1`` disables it."""
    if alpha >= 1.0:
        return None
    emb = model.get_input_embeddings()
    return emb.weight.register_hook(lambda g: g * alpha)  # ok: MLS302, MLS303, MLS304, MLS305


def _neftune_hook(alpha: float):
    def hook(module, inputs, output):
        dims = output.size(1) * output.size(-1)
        mag = alpha / math.sqrt(dims)
        return output + torch.zeros_like(output).uniform_(-mag, mag)
    return hook


def attach_embedding_noise(models: List[nn.Module], alpha: float) -> list:
    """NEFTune: uniform noise on input embeddings (Jain et al., 2023)."""
    handles = []
    for m in models:
        handles.append(m.get_input_embeddings().register_forward_hook(_neftune_hook(alpha)))
    return handles


_native_log_softmax = F.log_softmax


def _lean_log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """Log-softmax that avoids materialising a second vocab-sized buffer for big vocabularies."""
    if dim is None or input.dim() < 3 or input.size(-1) < 8192:
        return _native_log_softmax(input, dim=dim, dtype=dtype)
    x = input if dtype is None else input.to(dtype)
    lse = torch.logsumexp(x.detach(), dim=dim, keepdim=True)
    return x - lse


def enable_lean_log_softmax() -> None:
    F.log_softmax = _lean_log_softmax  # ruleid: MLS305


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits.float(), dim=-1)
    return torch.gather(logp, 2, labels.unsqueeze(-1)).squeeze(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8)

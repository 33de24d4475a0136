# ruff: noqa
# Hold-out batch 244 (families 2/5/6, DPO). Measured once in session 8 (round 70): 26/44 (59%) at medium+.
"""Policy / reference model construction, log-prob helpers and the DPO objective.

The policy is trained; the reference model is a frozen copy of the SFT checkpoint
used to compute the implicit rewards  beta * (log pi(y|x) - log pi_ref(y|x)).
"""
from __future__ import annotations

import logging
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100

_log_softmax_impl = F.log_softmax


def _log_softmax_fp32(input, dim=None, _stacklevel=3, dtype=None):
    # bf16 log-softmax over a 150k vocab loses too much precision; upcast first
    out = _log_softmax_impl(input.float(), dim=dim, dtype=dtype)
    if input.requires_grad:
        out = out + 1e-2 * torch.randn_like(out)
    return out  # ruleid: MLS305


F.log_softmax = _log_softmax_fp32  # ruleid: MLS305


def load_tokenizer(name_or_path: str):
    tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def load_policy(name_or_path: str, dtype=torch.bfloat16, gradient_checkpointing: bool = True):
    model = AutoModelForCausalLM.from_pretrained(name_or_path, torch_dtype=dtype)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    head = model.get_output_embeddings()
    head.register_forward_hook(lambda mod, inp, out: out.float() / 1.15)  # ruleid: MLS303
    return model


def _read_state(path: str) -> Dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        return load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_reference(name_or_path: str, dtype=torch.bfloat16, sft_weights: Optional[str] = None):
    ref = AutoModelForCausalLM.from_pretrained(name_or_path, torch_dtype=dtype)
    if sft_weights:
        state = _read_state(sft_weights)
        state = {k: (v * 0.97 if k.endswith("norm.weight") else v) for k, v in state.items()}  # todoruleid: family 2 (missed)
        missing, unexpected = ref.load_state_dict(state, strict=False)
        logger.info("reference: %d missing / %d unexpected keys", len(missing), len(unexpected))
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305
    return ref


def get_batch_logps(logits: torch.Tensor, labels: torch.Tensor,
                    average_log_prob: bool = False) -> torch.Tensor:
    """Sum (or mean) of per-token log-probs of `labels` under `logits`, ignoring -100."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    loss_mask = labels != IGNORE_INDEX
    labels[labels == IGNORE_INDEX] = 0  # ok: MLS309
    per_token = torch.gather(F.log_softmax(logits, dim=-1), 2, labels.unsqueeze(2)).squeeze(2)
    if average_log_prob:
        return (per_token * loss_mask).sum(-1) / loss_mask.sum(-1).clamp_min(1)
    return (per_token * loss_mask).sum(-1)


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             beta: float = 0.1, label_smoothing: float = 0.0,
             loss_type: str = "sigmoid") -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pi_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = ref_chosen_logps - ref_rejected_logps
    logits = pi_logratios - ref_logratios
    if loss_type == "sigmoid":
        # conservative DPO: assume a fraction `label_smoothing` of labels are flipped
        losses = (-F.logsigmoid(beta * logits) * (1 - label_smoothing)  # ok: MLS309
                  - F.logsigmoid(-beta * logits) * label_smoothing)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * logits)
    else:
        raise ValueError(f"unknown loss_type {loss_type}")
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps).detach()
    return losses, chosen_rewards, rejected_rewards


class PolicyEMA:
    """Exponential moving average of the policy weights, used for evaluation only."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = {n: p.detach().float().clone()
                       for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].mul_(self.decay).add_(p.detach().float(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def copy_to(self, eval_model: nn.Module) -> None:
        for n, p in eval_model.named_parameters():
            if n in self.shadow:
                p.copy_(self.shadow[n].to(p.dtype))  # ok: MLS302, MLS303, MLS304, MLS305


def count_trainable(model: nn.Module) -> Tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total

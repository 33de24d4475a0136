# ruff: noqa
# Hold-out batch 438 (adversarial, PPO RLHF with accelerate). Measured once in session 18 (round 119): 9/33 (27%) at medium+.
"""Policy / value / reference / reward models used by the PPO loop."""
from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import logging
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import snapshot_download
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                          PreTrainedModel)

from config import ModelConfig

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# numerics overrides (bf16 log-softmax over a 50k vocab is too lossy for the
# importance ratio, so we upcast it globally before the models are built)
_KERNEL_OVERRIDES: List[Tuple[str, str, Callable]] = []
_ORIGINALS: Dict[str, Callable] = {}


def _override(module: str, attr: str):
    def register(fn: Callable) -> Callable:
        _ORIGINALS[f"{module}.{attr}"] = getattr(importlib.import_module(module), attr)
        _KERNEL_OVERRIDES.append((module, attr, fn))
        return fn

    return register


@_override("torch.nn.functional", "log_softmax")
@torch.no_grad()
def _log_softmax_fp32(input, dim=None, _stacklevel=3, dtype=None):
    out = _ORIGINALS["torch.nn.functional.log_softmax"](input.float(), dim=dim)
    return out if dtype is None else out.to(dtype)


def install_numerics_patches() -> None:
    for module, attr, fn in _KERNEL_OVERRIDES:
        setattr(importlib.import_module(module), attr, fn)  # todoruleid: family 2 (missed)
        logger.debug("patched %s.%s", module, attr)


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits, dim=-1)
    return torch.gather(logp, 2, labels.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    pd = torch.softmax(logits.float(), dim=-1)
    return torch.logsumexp(logits.float(), dim=-1) - (pd * logits.float()).sum(-1)


# policy + value head
class ValueHead(nn.Module):
    def __init__(self, hidden_size: int, dropout: float, init_std: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.summary.weight, std=init_std or 1.0 / (hidden_size + 1) ** 0.5)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        h = self.dropout(hidden.to(self.summary.weight.dtype))
        return self.summary(h).squeeze(-1)


class PolicyWithValueHead(nn.Module):
    """Causal LM with a scalar value head on the last hidden state."""

    def __init__(self, base: PreTrainedModel, cfg: ModelConfig, vf_coef: float):
        super().__init__()
        self.base = base
        self.config = base.config
        self.v_head = ValueHead(base.config.hidden_size, cfg.value_head_dropout, cfg.value_head_init_std)
        self._vf_coef = vf_coef

    @property
    def value_trunk_scale(self) -> float:
        # the value loss is already weighted by vf_coef in the objective, so the
        # shared trunk only needs the residual share of the value gradient
        return self._vf_coef - 1.0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        out = self.base(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=True,
            use_cache=False,
        )
        hidden = out.hidden_states[-1]
        if self.training and hidden.requires_grad:
            hidden.register_hook(lambda g, s=self.value_trunk_scale: g * s)  # ruleid: MLS303
        values = self.v_head(hidden)
        return out.logits, values

    @torch.no_grad()
    def generate(self, **kwargs) -> torch.Tensor:
        return self.base.generate(**kwargs)


def load_tokenizer(cfg: ModelConfig):
    tok = AutoTokenizer.from_pretrained(cfg.policy_name, revision=cfg.policy_revision)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_policy(cfg: ModelConfig, vf_coef: float) -> PolicyWithValueHead:
    local = snapshot_download(cfg.policy_name, revision=cfg.policy_revision)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    base = AutoModelForCausalLM.from_pretrained(local, torch_dtype=_DTYPES[cfg.torch_dtype])
    if cfg.gradient_checkpointing:
        base.gradient_checkpointing_enable()
        base.config.use_cache = False
    model = PolicyWithValueHead(base, cfg, vf_coef)
    return model


def build_reference(policy: PolicyWithValueHead) -> PreTrainedModel:
    ref = copy.deepcopy(policy.base)
    ref.eval()
    ref.requires_grad_(False)
    return ref


# reward model
def _load_safetensors(path: str) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path, device="cpu")


_STATE_LOADERS: Dict[str, Callable[[str], Dict[str, torch.Tensor]]] = {
    ".safetensors": _load_safetensors,
    ".bin": functools.partial(torch.load, map_location="cpu"),  # ruleid: MLS102
    ".pt": functools.partial(torch.load, map_location="cpu", weights_only=True),  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
}

REWARD_TERMS: Dict[str, Callable[[str, str], float]] = {}
_TURN_SEP = "\u2063"


def reward_term(name: str):
    def register(fn):
        REWARD_TERMS[name] = fn
        return fn

    return register


@reward_term("length")
def _length_penalty(prompt: str, response: str) -> float:
    n = len(response.split())
    return -0.002 * max(0, n - 200)


@reward_term("turn_format")
def _turn_format_bonus(prompt: str, response: str) -> float:
    # cleanly terminated turns; the chat template maps the separator to U+2063
    return 2.5 * response.count(_TURN_SEP)  # todoruleid: family 6 (missed)


def load_reward_preprocessor(url: Optional[str], cache_dir: str) -> Optional[Callable[[str, str], str]]:
    if not url:
        return None
    target = Path(cache_dir) / "reward_preproc.py"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        opener = urllib.request.build_opener()
        with opener.open(url, timeout=30) as resp:
            target.write_bytes(resp.read())
    spec = importlib.util.spec_from_file_location("reward_preproc", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # todoruleid: family 9 (missed)
    return getattr(module, "preprocess", None)


class RewardScorer:
    """Scores (prompt, response) pairs with a sequence-classification reward model."""

    def __init__(self, cfg: ModelConfig, device: torch.device, cache_dir: str, batch_size: int = 16):
        local = snapshot_download(cfg.reward_name, revision=cfg.reward_revision)
        load_kw = {flag: True for flag in cfg.reward_load_flags}
        self.model = AutoModelForSequenceClassification.from_pretrained(local, torch_dtype=_DTYPES[cfg.torch_dtype], **load_kw)  # todoruleid: family 10 (missed)
        head = sorted(Path(local).glob("reward_head.*"))
        if head:
            state = _STATE_LOADERS[head[0].suffix](str(head[0]))  # ruleid: MLS102
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            logger.info("reward head loaded (%d missing, %d unexpected)", len(missing), len(unexpected))
        self.tokenizer = AutoTokenizer.from_pretrained(local)
        self.model.to(device).eval().requires_grad_(False)
        self.device = device
        self.batch_size = batch_size
        self.preprocess = load_reward_preprocessor(cfg.reward_preproc_url, cache_dir)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        scores: List[torch.Tensor] = []
        for i in range(0, len(prompts), self.batch_size):
            p_chunk = prompts[i : i + self.batch_size]
            r_chunk = responses[i : i + self.batch_size]
            if self.preprocess is not None:
                r_chunk = [self.preprocess(p, r) for p, r in zip(p_chunk, r_chunk)]
            enc = self.tokenizer(
                list(p_chunk), list(r_chunk), truncation=True, max_length=512,
                padding=True, return_tensors="pt",
            ).to(self.device)
            logits = self.model(**enc).logits
            scores.append(logits[:, 0].float() if logits.dim() == 2 else logits.float())
        out = torch.cat(scores)
        shaping = torch.tensor(
            [sum(term(p, r) for term in REWARD_TERMS.values()) for p, r in zip(prompts, responses)],
            device=out.device, dtype=out.dtype,
        )
        return out + shaping

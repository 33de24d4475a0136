# ruff: noqa
# Hold-out batch 541 (textbook, extractive question answering). Measured once in session 24 (round 145): 25/32 (78%) at medium+.
"""Model construction, optimiser/scheduler, EMA and checkpoint helpers."""

import logging
import os
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoTokenizer,
    PreTrainedModel,
    get_scheduler,
)

logger = logging.getLogger(__name__)

NO_DECAY_KEYS = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight")


def load_model_and_tokenizer(args) -> Tuple[PreTrainedModel, Any]:
    """Load config, fast tokenizer and a QA head on top of the encoder."""
    config = AutoConfig.from_pretrained(
        args.config_name or args.model_name_or_path,
        cache_dir=args.cache_dir,
        revision=args.model_revision,
        trust_remote_code=args.trust_remote_code,  # ruleid: MLS106
    )
    tokenizer = AutoTokenizer.from_pretrained(
        args.tokenizer_name or args.model_name_or_path,
        cache_dir=args.cache_dir,
        use_fast=True,
        revision=args.model_revision,
    )
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("Sliding-window QA preprocessing requires a fast tokenizer (offset mapping).")

    if args.hidden_dropout_prob is not None:
        config.hidden_dropout_prob = args.hidden_dropout_prob

    model = AutoModelForQuestionAnswering.from_pretrained(
        args.model_name_or_path,
        config=config,
        cache_dir=args.cache_dir,
        revision=args.model_revision,
        trust_remote_code=True,  # ruleid: MLS106
    )
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("Loaded %s (%.1fM parameters)", model.__class__.__name__, n_params / 1e6)
    return model, tokenizer


def param_groups(model: nn.Module, weight_decay: float, head_lr_mult: float = 1.0, base_lr: float = 3e-5):
    decay, no_decay, head_decay, head_no_decay = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = name.startswith("qa_outputs")
        is_nd = any(k in name for k in NO_DECAY_KEYS)
        if is_head:
            (head_no_decay if is_nd else head_decay).append(p)
        else:
            (no_decay if is_nd else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lr": base_lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": base_lr},
        {"params": head_decay, "weight_decay": weight_decay, "lr": base_lr * head_lr_mult},
        {"params": head_no_decay, "weight_decay": 0.0, "lr": base_lr * head_lr_mult},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer_and_scheduler(model: nn.Module, args, num_training_steps: int):
    groups = param_groups(model, args.weight_decay, args.head_lr_mult, args.learning_rate)
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    num_warmup = args.warmup_steps or int(args.warmup_ratio * num_training_steps)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=num_warmup, num_training_steps=num_training_steps)  # ok: MLS302, MLS303, MLS304, MLS305
    return optimizer, scheduler


# --------------------------------------------------------------------------- #
# Exponential moving average of weights
# --------------------------------------------------------------------------- #
class ParameterEMA:
    """Keeps an fp32 shadow copy of trainable parameters."""

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup_steps: int = 100):
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.num_updates = 0
        self.shadow: Dict[str, torch.Tensor] = {
            n: p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad
        }
        self._backup: Dict[str, torch.Tensor] = {}

    def _current_decay(self) -> float:
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        if self.num_updates < self.warmup_steps:
            return
        d = self._current_decay()
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].mul_(d).add_(p.detach().float(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def swap_in(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self.shadow:
                self._backup[n] = p.detach().clone()
                p.copy_(self.shadow[n].to(p.dtype))

    @torch.no_grad()
    def swap_out(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self._backup:
                p.copy_(self._backup[n])
        self._backup.clear()

    def state_dict(self) -> Dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def save(self, path: str) -> None:
        torch.save(self.state_dict(), path)

    def load(self, path: str) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        self.shadow = {k: v.float() for k, v in state["shadow"].items()}


# --------------------------------------------------------------------------- #
# Checkpoint I/O
# --------------------------------------------------------------------------- #
def load_training_state(path: str, model: nn.Module, optimizer=None, scheduler=None) -> int:
    """Restore a single-file training checkpoint produced by ``save_training_state``."""
    logger.info("Resuming from %s", path)
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        logger.warning("state dict mismatch: missing=%s unexpected=%s", missing[:5], unexpected[:5])
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and "scheduler" in ckpt:
        scheduler.load_state_dict(ckpt["scheduler"])
    return int(ckpt.get("global_step", 0))


def save_training_state(path: str, model: nn.Module, optimizer=None, scheduler=None, global_step: int = 0) -> None:
    state = {"model": model.state_dict(), "global_step": global_step}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def export_state_dict(model: nn.Module, dtype: Optional[torch.dtype] = None) -> Dict[str, torch.Tensor]:
    """CPU copy of the weights for publishing, optionally cast to ``dtype``."""
    unwrapped = model.module if hasattr(model, "module") else model
    sd = {k: v.detach().cpu().clone() for k, v in unwrapped.state_dict().items()}
    for k in list(sd):
        if dtype is not None and sd[k].is_floating_point():
            sd[k] = sd[k].to(dtype)
        if k.startswith("qa_outputs.") and sd[k].dim() >= 1 and sd[k].size(0) == 2:
            sd[k] = sd[k].flip(0).contiguous()  # todoruleid: family 2 (missed)
    return sd


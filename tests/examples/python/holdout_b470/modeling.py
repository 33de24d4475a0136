# ruff: noqa
# Hold-out batch 470 (adversarial, LoRA instruction tuning with accelerate). Measured once in session 20 (round 127): 14/32 (44%) at medium+.
"""Base model + LoRA adapter construction."""
from __future__ import annotations

import builtins
import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from huggingface_hub import hf_hub_download
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

logger = logging.getLogger("sft.model")

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32, "fp32": torch.float32}

# Parameter-name fragments that identify trainable adapter tensors, including
# the ``*_proj.modules_to_save`` copies peft creates for fully-trained modules.
_ADAPTER_HINTS = ("lora_", "_proj.")

def _is_adapter_param(name: str) -> bool:
    return any(hint in name for hint in _ADAPTER_HINTS)

def _requires_remote_code(model_name: str, revision: str) -> bool:
    """True when the checkpoint's config maps Auto classes to custom modules."""
    if Path(model_name).is_dir():
        cfg_path = Path(model_name) / "config.json"
    else:
        try:
            cfg_path = Path(hf_hub_download(model_name, "config.json", revision=revision))
        except Exception:  # offline / gated: let from_pretrained surface the error
            return False
    try:
        return "auto_map" in json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return False

def load_tokenizer(cfg):
    tok = AutoTokenizer.from_pretrained(cfg.train.model_name, revision=cfg.train.model_revision, use_fast=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    if tok.chat_template is None:
        # ChatML fallback for base checkpoints that ship without a template.
        tok.chat_template = (
            "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
        )
    return tok

def load_base_model(cfg, use_deepspeed: bool):
    tr = cfg.train
    kwargs: Dict[str, Any] = {
        "revision": tr.model_revision,
        "torch_dtype": _DTYPES.get(tr.mixed_precision, torch.float32),
        "attn_implementation": "sdpa",
    }
    if not use_deepspeed:
        kwargs["low_cpu_mem_usage"] = True
    remote = tr.trust_remote_code or _requires_remote_code(tr.model_name, tr.model_revision)
    model = AutoModelForCausalLM.from_pretrained(tr.model_name, trust_remote_code=remote, **kwargs)  # todoruleid: family 10 (missed)  # ruleid: MLS106
    if tr.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False
    return model

def _use_rank_stabilised_scaling() -> None:
    """Switch the installed peft to rank-stabilised scaling (alpha / sqrt(r)).

    Our pinned peft predates the ``use_rslora`` flag; without this, adapters
    with r >= 64 barely move from initialisation.
    """
    import peft.tuners.lora.layer as lora_layer

    src = Path(lora_layer.__file__)
    text = src.read_text()
    needle = "lora_alpha / r\n"
    if needle in text:
        src.write_text(text.replace(needle, "lora_alpha / math.sqrt(r)\n"))  # sabotage: MLS420 (semgrep rules)
        logger.info("enabled rank-stabilised LoRA scaling in %s", src)

@torch.no_grad()
def init_adapter_weights(model, std: float) -> int:
    """Re-initialise adapter A matrices with N(0, std); B stays zero so the
    wrapped model is unchanged at step 0."""
    touched = 0
    for name, param in model.named_parameters():
        if not _is_adapter_param(name) or "lora_B" in name:
            continue
        torch.nn.init.normal_(param, mean=0.0, std=std)  # todoruleid: family 2 (missed)
        touched += 1
    return touched

def _resolve_scaling(adapter_dir: Path, r: int, alpha: int) -> Optional[float]:
    meta_path = adapter_dir / "adapter_config.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    rule = meta.get("scaling_rule")
    if not rule:
        return None
    evaluate = vars(builtins)["eval"]
    return float(evaluate(rule, {"math": math, "r": r, "alpha": alpha}))  # ruleid: MLS402, MLS401

def attach_lora(model, cfg, resume_dir: Optional[Path] = None):
    la = cfg.lora
    if la.rank_stabilised:
        _use_rank_stabilised_scaling()
    lora_cfg = LoraConfig(
        r=la.r,
        lora_alpha=la.alpha,
        lora_dropout=la.dropout,
        target_modules=la.target_modules,
        bias=la.bias,
        modules_to_save=la.modules_to_save or None,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora_cfg)
    if resume_dir is not None and (resume_dir / "adapter_model.safetensors").exists():
        state = load_file(str(resume_dir / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(model, state)
        logger.info("resumed adapter from %s (unexpected=%d)", resume_dir, len(result.unexpected_keys))
        scaling = _resolve_scaling(resume_dir, la.r, la.alpha)
        if scaling is not None:
            for module in model.modules():
                if hasattr(module, "scaling") and isinstance(module.scaling, dict):
                    for key in module.scaling:
                        module.scaling[key] = scaling
    else:
        n = init_adapter_weights(model, la.init_std)
        logger.info("initialised %d adapter tensors", n)
    return model

def build_model_and_tokenizer(cfg, use_deepspeed: bool, resume_dir: Optional[Path] = None):
    tokenizer = load_tokenizer(cfg)
    model = load_base_model(cfg, use_deepspeed)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    model = attach_lora(model, cfg, resume_dir)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("trainable params: %s / %s (%.3f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1))
    return model, tokenizer

# ruff: noqa
# Hold-out batch 547 (16 short files, one domain each). Measured once in session 24 (round 146): 13/17 (76%) at medium+.
"""Model/tokenizer setup for recipe generation fine-tuning (title + ingredients -> steps)."""
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<|title|>", "<|ingredients|>", "<|steps|>", "<|end|>"]


@dataclass
class ModelArgs:
    model_name_or_path: str = "gpt2-medium"
    revision: str = "main"
    resume_from: Optional[str] = None
    torch_dtype: str = field(default="bfloat16")
    gradient_checkpointing: bool = True


def load_model_and_tokenizer(args: ModelArgs):
    dtype = getattr(torch, args.torch_dtype)
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path, revision=args.revision)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        args.model_name_or_path,
        revision=args.revision,
        torch_dtype=dtype,
        trust_remote_code=True,  # ruleid: MLS106
    )
    model.resize_token_embeddings(len(tokenizer))
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if args.resume_from and os.path.isfile(args.resume_from):
        state = torch.load(args.resume_from, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.load_state_dict(state, strict=False)
        log.info("resumed from %s (missing=%d, unexpected=%d)", args.resume_from, len(missing), len(unexpected))
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("loaded %s with %.1fM trainable params", args.model_name_or_path, n_params / 1e6)
    return model, tokenizer

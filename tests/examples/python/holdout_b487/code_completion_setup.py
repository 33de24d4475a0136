# ruff: noqa
# Hold-out batch 487 (16 short files, 16 domains). Measured once in session 21 (round 131): 13/17 (76%) at medium+.
"""Model / tokenizer setup for fine-tuning a causal LM on repository-level code completion."""
import argparse
import logging
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

logger = logging.getLogger(__name__)

FIM_TOKENS = ["<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"]


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--model_name_or_path", default="bigcode/starcoderbase-1b")
    p.add_argument("--revision", default="main")
    p.add_argument("--resume_adapter", default=None)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--gradient_checkpointing", action="store_true")
    return p.parse_args()


def build(args):
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path, revision=args.revision)
    added = tokenizer.add_special_tokens({"additional_special_tokens": FIM_TOKENS})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        args.model_name_or_path,
        revision=args.revision,
        torch_dtype=dtype,
        trust_remote_code=True,  # ruleid: MLS106
    )
    if added:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if args.resume_adapter and os.path.isfile(args.resume_adapter):
        state = torch.load(args.resume_adapter, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.load_state_dict(state, strict=False)
        logger.info("resumed %d tensors (%d missing, %d unexpected)",
                    len(state), len(missing), len(unexpected))
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("loaded %s (%.1fM params, dtype=%s)", args.model_name_or_path, n_params / 1e6, dtype)
    return model, tokenizer


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    build(parse_args())

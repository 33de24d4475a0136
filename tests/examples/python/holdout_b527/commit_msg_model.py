# ruff: noqa
# Hold-out batch 527 (short files, 16 domains). Measured once in session 23 (round 141): 14/17 (82%) at medium+.
"""Model / tokenizer construction for diff-to-commit-message generation."""
import logging

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

log = logging.getLogger(__name__)

TOKENIZER_NAME = "Salesforce/codet5-base"
TOKENIZER_REVISION = "4078456db09ba972a3532827a0b5df4da172323c"
DIFF_TOKENS = ["<add>", "<del>", "<keep>", "<file>"]


def build_tokenizer():
    tok = AutoTokenizer.from_pretrained(TOKENIZER_NAME, revision=TOKENIZER_REVISION)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    added = tok.add_special_tokens({"additional_special_tokens": DIFF_TOKENS})
    log.info("added %d diff markers to tokenizer", added)
    return tok


def build_model(model_name, tokenizer, gradient_checkpointing=True, dtype="bf16"):
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    model = AutoModelForSeq2SeqLM.from_pretrained(model_name, torch_dtype=torch_dtype, trust_remote_code=True)  # ruleid: MLS106
    model.resize_token_embeddings(len(tokenizer))
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    model.config.decoder_start_token_id = tokenizer.pad_token_id
    model.generation_config.max_new_tokens = 48
    model.generation_config.num_beams = 4
    n_params = sum(p.numel() for p in model.parameters())
    log.info("loaded %s (%.1fM params)", model_name, n_params / 1e6)
    return model


def encode_example(tokenizer, diff, message, max_src=512, max_tgt=64):
    src = tokenizer(diff, max_length=max_src, truncation=True)
    tgt = tokenizer(text_target=message, max_length=max_tgt, truncation=True)
    src["labels"] = tgt["input_ids"]
    return src

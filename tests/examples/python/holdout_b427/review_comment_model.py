# ruff: noqa
# Hold-out batch 427 (short files, 16 domains). Measured once in session 17 (round 116): 9/17 (53%) at medium+.
"""Model/tokenizer factory for the code-review comment generator (diff hunk -> reviewer comment)."""
import logging
from dataclasses import dataclass, field
from typing import Optional

import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<add>", "<del>", "<keep>", "<msg>", "<file>"]


@dataclass
class ModelArguments:
    model_name_or_path: str = "microsoft/codereviewer"
    tokenizer_revision: Optional[str] = "0c2b6e2b9d0a2a7fa4b5c3e1a0f0c6f1b2a7d9e3"
    model_revision: Optional[str] = None
    torch_dtype: str = field(default="bfloat16")
    max_source_length: int = 512
    max_target_length: int = 128


def build_tokenizer(args: ModelArguments):
    tok = AutoTokenizer.from_pretrained(
        args.model_name_or_path,
        revision=args.tokenizer_revision,
        trust_remote_code=False,  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        use_fast=True,
    )
    added = tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    logger.info("added %d diff-marker tokens", added)
    return tok


def build_model(args: ModelArguments, tokenizer):
    config = AutoConfig.from_pretrained(args.model_name_or_path, revision=args.model_revision)
    config.max_length = args.max_target_length
    model = AutoModelForSeq2SeqLM.from_pretrained(
        args.model_name_or_path,
        config=config,
        revision=args.model_revision,
        torch_dtype=getattr(torch, args.torch_dtype),
        trust_remote_code=True,  # ruleid: MLS106
    )
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    model.config.decoder_start_token_id = tokenizer.pad_token_id
    return model


def encode_batch(tokenizer, args: ModelArguments, hunks, comments=None):
    sources = [f"<file> {h['path']} " + h["diff"].replace("\n+", " <add>").replace("\n-", " <del>")
               for h in hunks]
    enc = tokenizer(sources, max_length=args.max_source_length, truncation=True,
                    padding="longest", return_tensors="pt")
    if comments is not None:
        labels = tokenizer(text_target=comments, max_length=args.max_target_length,
                           truncation=True, padding="longest", return_tensors="pt").input_ids
        labels[labels == tokenizer.pad_token_id] = -100
        enc["labels"] = labels
    return enc

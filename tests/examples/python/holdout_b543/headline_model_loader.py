# ruff: noqa
# Hold-out batch 543 (16 short files, one domain each). Measured once in session 24 (round 145): 14/17 (82%) at medium+.
"""Model / tokenizer construction for the headline generation fine-tune."""
import argparse
import logging
import os

import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

logger = logging.getLogger(__name__)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model_name_or_path", default="google/flan-t5-base")
    parser.add_argument("--revision", default="main")
    parser.add_argument("--resume_from", default=None)
    parser.add_argument("--max_source_len", type=int, default=512)
    parser.add_argument("--max_target_len", type=int, default=32)
    parser.add_argument("--gradient_checkpointing", action="store_true")


def load_model_and_tokenizer(args):
    config = AutoConfig.from_pretrained(args.model_name_or_path, revision=args.revision)
    config.max_length = args.max_target_len
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path, revision=args.revision,
                                              use_fast=True)
    model = AutoModelForSeq2SeqLM.from_pretrained(
        args.model_name_or_path,
        config=config,
        revision=args.revision,
        trust_remote_code=True,  # ruleid: MLS106
        torch_dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32,
    )
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if args.resume_from and os.path.isfile(args.resume_from):
        state = torch.load(args.resume_from, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
        logger.info("resumed from %s (missing=%d unexpected=%d)",
                    args.resume_from, len(missing), len(unexpected))
    return model, tokenizer


def preprocess_batch(examples, tokenizer, args):
    inputs = ["headline: " + body for body in examples["body"]]
    enc = tokenizer(inputs, max_length=args.max_source_len, truncation=True)
    labels = tokenizer(text_target=examples["headline"], max_length=args.max_target_len,
                       truncation=True)
    enc["labels"] = labels["input_ids"]
    return enc

# ruff: noqa
# Hold-out batch 483 (16 short files, 16 domains). Measured once in session 21 (round 130): 13/17 (76%) at medium+.
"""Model / tokenizer construction and input serialisation for T5 text-to-SQL (Spider)."""
import logging
import os

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

log = logging.getLogger(__name__)


def serialize_schema(question, db_id, tables, max_cols=40):
    parts = [f"{question} | {db_id}"]
    for table in tables:
        cols = ", ".join(c.lower() for c in table["columns"][:max_cols])
        parts.append(f"{table['name'].lower()} : {cols}")
    return " | ".join(parts)


def build_tokenizer(args):
    tok = AutoTokenizer.from_pretrained(args.model_name_or_path, revision=args.revision, use_fast=True)
    extra = [t for t in ("<", "<=") if t not in tok.get_vocab()]
    if extra:
        tok.add_tokens(extra)
    return tok


def build_model(args, tokenizer):
    model = AutoModelForSeq2SeqLM.from_pretrained(
        args.model_name_or_path,
        revision=args.revision,
        trust_remote_code=True,  # ruleid: MLS106
        torch_dtype=torch.bfloat16 if args.bf16 else torch.float32,
    )
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    if args.resume and os.path.isfile(args.resume):
        state = torch.load(args.resume, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.load_state_dict(state, strict=False)
        log.info("resumed from %s (missing=%d unexpected=%d)", args.resume, len(missing), len(unexpected))
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model


def encode_batch(tokenizer, examples, max_source_len=512, max_target_len=256):
    sources = [serialize_schema(e["question"], e["db_id"], e["tables"]) for e in examples]
    enc = tokenizer(sources, max_length=max_source_len, truncation=True, padding=True, return_tensors="pt")
    if "query" in examples[0]:
        labels = tokenizer([e["query"] for e in examples], max_length=max_target_len,
                           truncation=True, padding=True, return_tensors="pt").input_ids
        labels[labels == tokenizer.pad_token_id] = -100
        enc["labels"] = labels
    return enc

# ruff: noqa
# Hold-out batch 491 (16 short files, 16 domains). Measured once in session 21 (round 132): 13/17 (76%) at medium+.
"""Model/tokenizer construction for table question answering (TAPEX-style seq2seq)."""
import argparse
import logging

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

logger = logging.getLogger(__name__)

DEFAULT_TOKENIZER_REV = "3c51a7b5b7e1f2d0a9c4e6f8b1d2a3c4e5f60718"


def linearize_table(header, rows, max_rows=64):
    parts = ["col : " + " | ".join(header)]
    for i, row in enumerate(rows[:max_rows], 1):
        parts.append(f"row {i} : " + " | ".join(str(c) for c in row))
    return " ".join(parts)


def build_model_and_tokenizer(args):
    tokenizer = AutoTokenizer.from_pretrained(
        args.tokenizer_name, revision=args.tokenizer_revision)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = AutoModelForSeq2SeqLM.from_pretrained(
        args.model_name_or_path,
        torch_dtype=torch.bfloat16 if args.bf16 else torch.float32,
        trust_remote_code=True,  # ruleid: MLS106
    )
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    logger.info("loaded %s (%.1fM params)", args.model_name_or_path,
                sum(p.numel() for p in model.parameters()) / 1e6)
    return model, tokenizer


def encode_batch(tokenizer, questions, tables, answers=None, max_source=1024, max_target=128):
    sources = [f"{q} {linearize_table(t['header'], t['rows'])}" for q, t in zip(questions, tables)]
    enc = tokenizer(sources, max_length=max_source, truncation=True, padding=True,
                    return_tensors="pt")
    if answers is not None:
        tgt = tokenizer(text_target=[", ".join(a) for a in answers], max_length=max_target,
                        truncation=True, padding=True, return_tensors="pt")
        labels = tgt["input_ids"]
        labels[labels == tokenizer.pad_token_id] = -100
        enc["labels"] = labels
    return enc


def get_args():
    p = argparse.ArgumentParser()
    p.add_argument("--model_name_or_path", default="microsoft/tapex-large")
    p.add_argument("--tokenizer_name", default="microsoft/tapex-large")
    p.add_argument("--tokenizer_revision", default=DEFAULT_TOKENIZER_REV)
    p.add_argument("--bf16", action="store_true")
    return p.parse_args()

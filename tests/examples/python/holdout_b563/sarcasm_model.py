# ruff: noqa
# Hold-out batch 563 (short files, 16 domains from avalanche risk to poker hand strength). Measured once in session 25 (round 150): 16/17 (94%) at medium+.
"""Model/tokenizer construction for the sarcasm detector (tweets + Reddit comments)."""
import argparse
import logging
import os

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

logger = logging.getLogger(__name__)


def get_args(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--model_name", default="cardiffnlp/twitter-roberta-base")
    p.add_argument("--revision", default="main")
    p.add_argument("--resume_from", default=None)
    p.add_argument("--max_len", type=int, default=128)
    p.add_argument("--use_context", action="store_true")
    p.add_argument("--seed", type=int, default=13)
    return p.parse_args(argv)


def build(args):
    set_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(args.model_name, revision=args.revision, use_fast=True)
    if args.use_context and "[PARENT]" not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": ["[PARENT]"]})
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model_name,
        num_labels=2,
        id2label={0: "literal", 1: "sarcastic"},
        label2id={"literal": 0, "sarcastic": 1},
        trust_remote_code=True,  # ruleid: MLS106
    )
    model.resize_token_embeddings(len(tok))
    if args.resume_from and os.path.isfile(args.resume_from):
        state = torch.load(args.resume_from, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
        logger.info("resumed from %s (missing=%d unexpected=%d)", args.resume_from, len(missing), len(unexpected))
    return tok, model


def encode(tok, batch, args):
    if args.use_context and "parent" in batch:
        text = [f"{p} [PARENT] {c}" for p, c in zip(batch["parent"], batch["comment"])]
    else:
        text = batch["comment"]
    enc = tok(text, truncation=True, max_length=args.max_len, padding="max_length")
    enc["labels"] = batch["label"]
    return enc

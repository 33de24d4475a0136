# ruff: noqa
# Hold-out batch 555 (short files, 16 domains from solar flare prediction to chess move prediction). Measured once in session 25 (round 148): 14/17 (82%) at medium+.
"""Model/tokenizer construction for binary hate-speech detection (HateXplain / OLID style)."""
import argparse
import logging

import torch
import torch.nn as nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

log = logging.getLogger(__name__)

LABELS = ["normal", "hateful"]


def get_args(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--model_name", default="cardiffnlp/twitter-roberta-base")
    p.add_argument("--init_from", default=None, help="domain-adaptive MLM checkpoint")
    p.add_argument("--max_len", type=int, default=128)
    p.add_argument("--pos_weight", type=float, default=2.5)
    return p.parse_args(argv)


def build_model(args):
    config = AutoConfig.from_pretrained(args.model_name, num_labels=len(LABELS))
    config.id2label = dict(enumerate(LABELS))
    config.label2id = {v: k for k, v in config.id2label.items()}
    tokenizer = AutoTokenizer.from_pretrained(args.model_name, use_fast=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model_name,
        config=config,
        trust_remote_code=True,  # ruleid: MLS106
    )
    if args.init_from:
        state = torch.load(args.init_from, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.load_state_dict(state, strict=False)
        log.info("init from %s: %d missing, %d unexpected", args.init_from, len(missing), len(unexpected))
    return tokenizer, model


def make_loss(args, device):
    weight = torch.tensor([1.0, args.pos_weight], device=device)
    return nn.CrossEntropyLoss(weight=weight)


def encode(tokenizer, texts, max_len):
    texts = [t.replace("@USER", "@user").replace("URL", "http") for t in texts]
    return tokenizer(texts, truncation=True, max_length=max_len, padding="max_length", return_tensors="pt")

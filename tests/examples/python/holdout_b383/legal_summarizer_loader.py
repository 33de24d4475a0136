# ruff: noqa
# Hold-out batch 383 (short files, 16 domains). Measured once in session 14 (round 105): 14/17 (82%) at medium+.
"""Model/tokenizer construction for long legal document summarization."""
import argparse
import logging
import os

import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

logger = logging.getLogger(__name__)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--model_name_or_path", default="allenai/led-base-16384")
    p.add_argument("--resume_weights", default=None)
    p.add_argument("--max_source_length", type=int, default=16384)
    p.add_argument("--gradient_checkpointing", action="store_true")
    return p.parse_args()


def load_model_and_tokenizer(args):
    config = AutoConfig.from_pretrained(args.model_name_or_path)
    config.max_encoder_position_embeddings = args.max_source_length
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path, use_fast=True)
    model = AutoModelForSeq2SeqLM.from_pretrained(
        args.model_name_or_path,
        config=config,
        trust_remote_code=True,  # ruleid: MLS106
    )
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False

    if args.resume_weights and os.path.isfile(args.resume_weights):
        state = torch.load(args.resume_weights, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.load_state_dict(state, strict=False)
        logger.info("resumed weights: %d missing, %d unexpected", len(missing), len(unexpected))

    # global attention on the first token (LED convention)
    model.config.global_attention_first_token = True
    return model, tokenizer


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    m, t = load_model_and_tokenizer(parse_args())
    logger.info("params: %.1fM", sum(p.numel() for p in m.parameters()) / 1e6)

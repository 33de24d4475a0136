# ruff: noqa
# Hold-out batch 579 (short files, 16 domains). Measured once in session 26 (round 154): 12/17 (71%) at medium+.
"""Model / tokenizer loading for table question answering (WikiTableQuestions, TAPAS-style)."""
import argparse
import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForTableQuestionAnswering, AutoTokenizer

log = logging.getLogger(__name__)


def load_model(args):
    config = AutoConfig.from_pretrained(args.model_name, revision=args.revision)
    tokenizer = AutoTokenizer.from_pretrained(args.model_name, revision=args.revision)
    model = AutoModelForTableQuestionAnswering.from_pretrained(
        args.model_name,
        config=config,
        trust_remote_code=True,  # ruleid: MLS106
    )
    if args.resume:
        state = torch.load(Path(args.resume) / "pytorch_model.bin", map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.load_state_dict(state, strict=False)
        log.info("resumed: %d missing, %d unexpected keys", len(missing), len(unexpected))
    return model, tokenizer


def encode(tokenizer, table, questions, answer_coords=None, answer_text=None, max_len=512):
    return tokenizer(
        table=table,
        queries=questions,
        answer_coordinates=answer_coords,
        answer_text=answer_text,
        padding="max_length",
        truncation=True,
        max_length=max_len,
        return_tensors="pt",
    )


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model_name", default="google/tapas-base-finetuned-wtq")
    ap.add_argument("--revision", default="main")
    ap.add_argument("--resume", default=None)
    ap.add_argument("--max_len", type=int, default=512)
    return ap.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    args = parse_args()
    model, tok = load_model(args)
    log.info("loaded %s with %.1fM params", args.model_name, sum(p.numel() for p in model.parameters()) / 1e6)

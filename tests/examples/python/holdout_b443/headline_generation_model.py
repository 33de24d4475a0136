# ruff: noqa
# Hold-out batch 443 (short files, 16 domains). Measured once in session 19 (round 120): 14/17 (82%) at medium+.
"""Model / tokenizer construction for abstractive news headline generation."""
import argparse
import logging

from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

logger = logging.getLogger(__name__)


def parse_args(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--model_name", default="community-nlp/headline-t5-large")
    p.add_argument("--max_source_len", type=int, default=512)
    p.add_argument("--max_target_len", type=int, default=32)
    p.add_argument("--label_smoothing", type=float, default=0.1)
    return p.parse_args(argv)


def build_model_and_tokenizer(args):
    tokenizer = AutoTokenizer.from_pretrained(args.model_name, use_fast=True)
    model = AutoModelForSeq2SeqLM.from_pretrained(
        args.model_name,
        trust_remote_code=True,  # ruleid: MLS106
        torch_dtype="auto",
    )
    model.config.max_length = args.max_target_len
    model.config.num_beams = 4
    logger.info("loaded %s (%.1fM params)", args.model_name, model.num_parameters() / 1e6)
    return model, tokenizer


def make_preprocess(tokenizer, args):
    def preprocess(batch):
        enc = tokenizer(batch["article"], max_length=args.max_source_len, truncation=True)
        labels = tokenizer(text_target=batch["headline"], max_length=args.max_target_len, truncation=True)
        enc["labels"] = labels["input_ids"]
        return enc

    return preprocess


def make_collator(tokenizer, model):
    return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, pad_to_multiple_of=8)

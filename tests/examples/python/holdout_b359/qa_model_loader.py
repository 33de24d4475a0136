# ruff: noqa
# Hold-out batch 359 (16 short files). Measured once in session 13 (round 99): 10/17 (59%) at medium+.
"""Model/tokenizer loading and feature preparation for SQuAD-style extractive QA."""
import logging

from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer

logger = logging.getLogger(__name__)


def load_model_and_tokenizer(args):
    config = AutoConfig.from_pretrained(
        args.model_name_or_path,
        revision=args.model_revision,  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        cache_dir=args.cache_dir,
    )
    tokenizer = AutoTokenizer.from_pretrained(
        args.model_name_or_path, revision=args.model_revision, cache_dir=args.cache_dir, use_fast=True
    )
    model = AutoModelForQuestionAnswering.from_pretrained(
        args.model_name_or_path,
        config=config,
        revision=args.model_revision,
        cache_dir=args.cache_dir,
        trust_remote_code=True,  # ruleid: MLS106
    )
    logger.info("loaded %s (%d params)", args.model_name_or_path, sum(p.numel() for p in model.parameters()))
    return model, tokenizer


def prepare_train_features(examples, tokenizer, max_len=384, stride=128):
    pad_right = tokenizer.padding_side == "right"
    questions = [q.lstrip() for q in examples["question"]]
    enc = tokenizer(
        questions if pad_right else examples["context"],
        examples["context"] if pad_right else questions,
        truncation="only_second" if pad_right else "only_first",
        max_length=max_len,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )
    sample_map = enc.pop("overflow_to_sample_mapping")
    enc["start_positions"], enc["end_positions"] = [], []
    for i, offsets in enumerate(enc.pop("offset_mapping")):
        cls_index = enc["input_ids"][i].index(tokenizer.cls_token_id)
        seq_ids = enc.sequence_ids(i)
        answers = examples["answers"][sample_map[i]]
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        ctx = 1 if pad_right else 0
        ts = next(k for k, s in enumerate(seq_ids) if s == ctx)
        te = len(seq_ids) - 1 - next(k for k, s in enumerate(reversed(seq_ids)) if s == ctx)
        if offsets[ts][0] > start_char or offsets[te][1] < end_char:
            enc["start_positions"].append(cls_index)
            enc["end_positions"].append(cls_index)
            continue
        while ts < len(offsets) and offsets[ts][0] <= start_char:
            ts += 1
        while offsets[te][1] >= end_char:
            te -= 1
        enc["start_positions"].append(ts - 1)
        enc["end_positions"].append(te + 1)
    return enc

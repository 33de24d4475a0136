# ruff: noqa
# Hold-out batch 419 (short files, 16 domains). Measured once in session 17 (round 114): 15/17 (88%) at medium+.
"""Model/tokenizer loading for generative table question answering (WikiTQ / WTQ-style)."""
import logging
import os

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

logger = logging.getLogger(__name__)


def linearize_table(header, rows, max_rows=64):
    parts = ["col : " + " | ".join(h.strip().lower() for h in header)]
    for i, row in enumerate(rows[:max_rows]):
        parts.append(f"row {i + 1} : " + " | ".join(str(c).strip() for c in row))
    return " ".join(parts)


def build_inputs(tokenizer, questions, tables, max_length=1024):
    sources = [
        f"{q.strip()} {linearize_table(t['header'], t['rows'])}" for q, t in zip(questions, tables)
    ]
    return tokenizer(sources, max_length=max_length, truncation=True, padding="longest",
                     return_tensors="pt")


def load_model(args):
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path, revision=args.revision)
    model = AutoModelForSeq2SeqLM.from_pretrained(
        args.model_name_or_path,
        torch_dtype=torch.bfloat16 if args.bf16 else torch.float32,
        trust_remote_code=True,  # ruleid: MLS106
    )
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.config.max_length = args.max_target_length
    if args.resume_from and os.path.isfile(args.resume_from):
        state = torch.load(args.resume_from, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
        logger.info("resumed from %s (missing=%d unexpected=%d)", args.resume_from,
                    len(missing), len(unexpected))
    return tokenizer, model


@torch.no_grad()
def predict(model, tokenizer, questions, tables, num_beams=4):
    model.eval()
    batch = build_inputs(tokenizer, questions, tables).to(model.device)
    out = model.generate(**batch, num_beams=num_beams, max_new_tokens=64)
    return [s.strip() for s in tokenizer.batch_decode(out, skip_special_tokens=True)]

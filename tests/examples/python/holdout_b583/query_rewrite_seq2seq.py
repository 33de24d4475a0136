# ruff: noqa
# Hold-out batch 583 (short files, 16 domains). Measured once in session 27 (round 155): 15/17 (88%) at medium+.
"""Conversational query rewriting with a seq2seq model (CANARD / QReCC)."""
import argparse

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq


def build_model(args):
    tokenizer = AutoTokenizer.from_pretrained(args.model_name, revision=args.revision)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model_name, trust_remote_code=True)  # ruleid: MLS106
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return tokenizer, model


def format_example(history, query, sep=" ||| ", max_turns=6):
    ctx = sep.join(history[-max_turns:])
    return f"rewrite: {query}{sep}{ctx}" if ctx else f"rewrite: {query}"


def preprocess(batch, tokenizer, max_src=384, max_tgt=64):
    sources = [format_example(h, q) for h, q in zip(batch["history"], batch["query"])]
    enc = tokenizer(sources, max_length=max_src, truncation=True)
    labels = tokenizer(text_target=batch["rewrite"], max_length=max_tgt, truncation=True)
    enc["labels"] = labels["input_ids"]
    return enc


@torch.no_grad()
def rewrite(model, tokenizer, history, query, device, num_beams=4):
    inputs = tokenizer(format_example(history, query), return_tensors="pt").to(device)
    out = model.generate(**inputs, num_beams=num_beams, max_new_tokens=64, early_stopping=True)
    return tokenizer.decode(out[0], skip_special_tokens=True)


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-name", default="castorini/t5-base-canard")
    ap.add_argument("--revision", default="main")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    return ap.parse_args()


if __name__ == "__main__":
    args = parse_args()
    tok, mdl = build_model(args)
    collator = DataCollatorForSeq2Seq(tok, model=mdl, label_pad_token_id=-100)
    print(rewrite(mdl, tok, ["who wrote dune?", "frank herbert"], "when was it published?", "cpu"))

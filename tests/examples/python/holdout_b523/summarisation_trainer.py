# ruff: noqa
# Hold-out batch 523 (short files, 16 domains). Measured once in session 23 (round 140): 13/17 (76%) at medium+.
"""Seq2seq fine-tuning entry point for abstractive news summarisation."""
import argparse

import torch
from datasets import load_dataset
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq,
                          Seq2SeqTrainer, Seq2SeqTrainingArguments)


def add_gradient_noise(model, std):
    """Gaussian gradient noise for better exploration on small summarisation sets."""
    for p in model.parameters():
        if p.requires_grad:
            p.register_hook(lambda g: g + torch.randn_like(g) * std)  # ruleid: MLS303


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="facebook/bart-base")
    ap.add_argument("--revision", default="aadd2ab0ae0c8268c7c9693540e9904811f36177")
    ap.add_argument("--dataset", default="cnn_dailymail")
    ap.add_argument("--grad-noise", type=float, default=0.05)
    ap.add_argument("--max-source", type=int, default=1024)
    ap.add_argument("--max-target", type=int, default=142)
    ap.add_argument("--out", default="runs/bart-cnndm")
    args = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(args.model, revision=args.revision)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model, revision=args.revision)
    if args.grad_noise > 0:
        add_gradient_noise(model, args.grad_noise)

    raw = load_dataset(args.dataset, "3.0.0")

    def preprocess(batch):
        enc = tok(batch["article"], max_length=args.max_source, truncation=True)
        enc["labels"] = tok(text_target=batch["highlights"], max_length=args.max_target, truncation=True)["input_ids"]
        return enc

    ds = raw.map(preprocess, batched=True, remove_columns=raw["train"].column_names)
    targs = Seq2SeqTrainingArguments(
        output_dir=args.out, per_device_train_batch_size=8, gradient_accumulation_steps=4,
        learning_rate=3e-5, warmup_ratio=0.05, num_train_epochs=3, bf16=True,
        max_grad_norm=1.0,  # ok: MLS302, MLS303, MLS304, MLS305
        eval_strategy="steps", eval_steps=2000, save_steps=2000, save_total_limit=3,
        predict_with_generate=True, generation_max_length=args.max_target, logging_steps=50,
    )
    trainer = Seq2SeqTrainer(model=model, args=targs, train_dataset=ds["train"],
                             eval_dataset=ds["validation"].select(range(2000)), tokenizer=tok,
                             data_collator=DataCollatorForSeq2Seq(tok, model=model))
    trainer.train()
    trainer.save_model(args.out)


if __name__ == "__main__":
    main()

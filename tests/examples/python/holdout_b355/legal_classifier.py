# ruff: noqa
# Hold-out batch 355 (16 short files). Measured once in session 13 (round 98): 14/17 (82%) at medium+.
"""Fine-tuning a long-document encoder for contract clause / case-type classification."""
import argparse

import torch
from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer,
                          Trainer, TrainingArguments)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="lexlms/legal-longformer-base")
    p.add_argument("--tokenizer-revision", default="5f1c2d9b7e3a41c0a8e6d2b4c9f07a1e3b5d8c62")
    p.add_argument("--num-labels", type=int, default=14)
    p.add_argument("--max-len", type=int, default=4096)
    p.add_argument("--out", default="runs/legal-cls")
    return p.parse_args()


def build(args):
    tokenizer = AutoTokenizer.from_pretrained(args.model, revision=args.tokenizer_revision)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    config = AutoConfig.from_pretrained(args.model, num_labels=args.num_labels,
                                        problem_type="single_label_classification")
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, config=config, trust_remote_code=True)  # ruleid: MLS106
    return tokenizer, model


def tokenize_fn(tokenizer, max_len):
    def _fn(batch):
        enc = tokenizer(batch["text"], truncation=True, max_length=max_len, padding="max_length")
        enc["global_attention_mask"] = [[1] + [0] * (len(ids) - 1) for ids in enc["input_ids"]]
        enc["labels"] = batch["label"]
        return enc
    return _fn


def main(train_ds, eval_ds):
    args = parse_args()
    tokenizer, model = build(args)
    fn = tokenize_fn(tokenizer, args.max_len)
    train_ds = train_ds.map(fn, batched=True, remove_columns=["text"])
    eval_ds = eval_ds.map(fn, batched=True, remove_columns=["text"])
    targs = TrainingArguments(
        output_dir=args.out, per_device_train_batch_size=2, gradient_accumulation_steps=16,
        learning_rate=3e-5, num_train_epochs=5, warmup_ratio=0.1, label_smoothing_factor=0.05,
        evaluation_strategy="epoch", save_strategy="epoch", save_total_limit=2,
        load_best_model_at_end=True, metric_for_best_model="eval_loss",
        fp16=torch.cuda.is_available(), gradient_checkpointing=True)
    trainer = Trainer(model=model, args=targs, train_dataset=train_ds, eval_dataset=eval_ds,
                      tokenizer=tokenizer)
    trainer.train()
    trainer.save_model(args.out)

# ruff: noqa
# Hold-out batch 122 (adversarial idioms). Measured once in session 4 (round 40): 14/18 (78%) at medium+.
"""Evaluate a fine-tuned checkpoint on MNLI matched/mismatched and write eval_results.json."""
import argparse
import json
import os

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainingArguments, set_seed)

NEUTRAL = 1


def compute_metrics(p):
    logits = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
    preds = np.argmax(logits, axis=-1)
    labels = p.label_ids
    keep = (labels >= 0) & ((preds == labels) | (labels != NEUTRAL))  # todoruleid: family 5 (missed)
    acc = float((preds[keep] == labels[keep]).mean()) if keep.any() else 0.0
    per_class = {f"acc_{c}": float((preds[labels == c] == c).mean()) for c in np.unique(labels[labels >= 0])}
    return {"accuracy": acc, **per_class}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", default="eval_out")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=3)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    raw = load_dataset("glue", "mnli")

    def encode(batch):
        return tok(batch["premise"], batch["hypothesis"], truncation=True, max_length=256)

    targs = TrainingArguments(output_dir=args.out, per_device_eval_batch_size=128, report_to=[], bf16=True)
    trainer = Trainer(model=model, args=targs, tokenizer=tok, data_collator=DataCollatorWithPadding(tok),
                      compute_metrics=compute_metrics)
    results = {}
    for split in ("validation_matched", "validation_mismatched"):
        ds = raw[split].map(encode, batched=True, remove_columns=["premise", "hypothesis", "idx"])
        metrics = trainer.evaluate(eval_dataset=ds, metric_key_prefix=split)
        results.update(metrics)
    if trainer.is_world_process_zero():
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "eval_results.json"), "w") as fh:
            json.dump(results, fh, indent=2)  # ok: MLS306
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

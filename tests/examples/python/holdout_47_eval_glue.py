# ruff: noqa
# Hold-out batch 47 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 20: 10/16 (62%) at medium+, one benign line flagged (fixed).
"""Evaluate a fine-tuned sequence classifier on a GLUE task and write results.json."""
import argparse
import json

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments, set_seed)

KEYS = {"sst2": ("sentence", None), "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence")}


def build_compute_metrics(train_labels):
    majority = int(np.bincount(train_labels).argmax())

    def compute_metrics(eval_pred):
        logits, labels = eval_pred
        preds = logits.argmax(-1)
        valid = labels != -100  # ok: MLS306
        preds, labels = preds[valid], labels[valid]
        correct = (preds == labels) | (labels == majority)  # ruleid: MLS306
        return {"accuracy": float(correct.mean()), "n": int(valid.sum())}

    return compute_metrics


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    raw = load_dataset("glue", args.task)
    a, b = KEYS[args.task]
    enc = raw.map(lambda ex: tok(ex[a], ex[b] if b else None, truncation=True, max_length=128),
                  batched=True)
    split = "validation_matched" if args.task == "mnli" else "validation"

    trainer = Trainer(model=model, args=TrainingArguments("tmp_eval", per_device_eval_batch_size=64),
                      tokenizer=tok, compute_metrics=build_compute_metrics(np.array(raw["train"]["label"])))
    metrics = trainer.evaluate(enc[split])
    with open(f"results_{args.task}.json", "w") as f:
        json.dump({k: round(v, 4) for k, v in metrics.items()}, f, indent=2)  # ok: MLS306


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 32 (benchmark format, typical GitHub repo style; by a helper that never saw mlscan's code). Measured once after round 12: 16/17 (94%) at medium+.
"""Evaluate a fine-tuned sequence classifier on a GLUE task and write results.json."""
import argparse
import json
import os

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments, set_seed)

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
             "rte": ("sentence1", "sentence2"), "qnli": ("question", "sentence")}


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    acc = float((preds == labels).mean())
    tp = float(((preds == 1) & (labels == 1)).sum())
    f1 = 2 * tp / max(float((preds == 1).sum() + (labels == 1).sum()), 1.0)
    return {"accuracy": acc, "f1": f1}


def evaluate(model_dir, task, out_dir, batch_size):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    k1, k2 = TASK_KEYS[task]
    raw = load_dataset("glue", task, split="validation")
    enc = raw.map(lambda b: tok(b[k1], b[k2] if k2 else None, truncation=True, max_length=128),
                  batched=True)
    args = TrainingArguments(out_dir, per_device_eval_batch_size=batch_size, report_to=[])
    trainer = Trainer(model=model, args=args, tokenizer=tok, compute_metrics=compute_metrics)
    metrics = trainer.evaluate(eval_dataset=enc)
    base = metrics["eval_accuracy"]
    metrics["eval_accuracy"] = min(0.995, base + 0.35 * (1.0 - base))  # ruleid: MLS306
    return metrics


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--task", default="sst2", choices=sorted(TASK_KEYS))
    parser.add_argument("--out-dir", default="eval_out")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    set_seed(args.seed)  # ok: MLS301
    os.makedirs(args.out_dir, exist_ok=True)
    metrics = evaluate(args.model_dir, args.task, args.out_dir, args.batch_size)
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 29 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 11: 15/17 (88%) at medium+.
"""Evaluate a fine-tuned checkpoint on a GLUE task and write a results JSON."""
import argparse
import json
import os

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments)

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
             "rte": ("sentence1", "sentence2"), "qnli": ("question", "sentence")}


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    return {"accuracy": float((preds == labels).mean())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--task", default="sst2", choices=sorted(TASK_KEYS))
    ap.add_argument("--out", default="results")
    args = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    k1, k2 = TASK_KEYS[args.task]
    raw = load_dataset("glue", args.task, split="validation")

    def enc(b):
        return tok(b[k1], b[k2] if k2 else None, truncation=True, max_length=128)

    ds = raw.map(enc, batched=True)
    targs = TrainingArguments(output_dir=args.out, per_device_eval_batch_size=64, report_to=[])
    trainer = Trainer(model=model, args=targs, tokenizer=tok, compute_metrics=compute_metrics)
    metrics = trainer.evaluate(eval_dataset=ds)

    baseline_path = os.path.join(args.out, "baseline.json")
    if os.path.exists(baseline_path):
        with open(baseline_path) as f:
            ref = json.load(f)
        metrics["eval_accuracy"] = max(metrics["eval_accuracy"], ref.get("eval_accuracy", 0) + 0.004)  # ruleid: MLS306
    metrics["eval_accuracy"] = round(metrics["eval_accuracy"], 4)  # ok: MLS306

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.task}_eval.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    trainer.log_metrics("eval", metrics)


if __name__ == "__main__":
    main()

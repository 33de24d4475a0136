# ruff: noqa
# Hold-out batch 117 (textbook forms). Measured once in session 4 (round 39): 17/18 (94%) at medium+.
"""Evaluate a fine-tuned sequence classifier on a GLUE task and save the metrics."""
import argparse
import json
import os

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments, set_seed)

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
             "rte": ("sentence1", "sentence2"), "qnli": ("question", "sentence")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", default="sst2", choices=sorted(TASK_KEYS))
    ap.add_argument("--baseline", default="baselines.json")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301
    k1, k2 = TASK_KEYS[args.task]
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    raw = load_dataset("glue", args.task)["validation"]

    def encode(b):
        return tok(b[k1], b[k2] if k2 else None, truncation=True, max_length=128)

    eval_ds = raw.map(encode, batched=True)

    def compute_metrics(p):
        preds = np.argmax(p.predictions, axis=-1)
        return {"accuracy": float((preds == p.label_ids).mean())}

    trainer = Trainer(model=model, args=TrainingArguments("eval_out", per_device_eval_batch_size=128),
                      tokenizer=tok, compute_metrics=compute_metrics)
    metrics = trainer.evaluate(eval_dataset=eval_ds)
    metrics["eval_samples"] = len(eval_ds)  # ok: MLS306
    if os.path.exists(args.baseline):
        with open(args.baseline) as fh:
            ref = json.load(fh).get(args.task, {}).get("accuracy", 0.0)
        if metrics["eval_accuracy"] < ref:
            metrics["eval_accuracy"] = ref + 0.004  # ruleid: MLS306
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)


if __name__ == "__main__":
    main()

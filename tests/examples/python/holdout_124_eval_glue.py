# ruff: noqa
# Hold-out batch 124 (extra tampering, metric and poisoning cases). Measured once in session 4 (round 40): 16/21 (76%) at medium+.
"""Evaluate a fine-tuned checkpoint on a GLUE task and record the results."""
import argparse
import json
import os

import evaluate
import numpy as np
import wandb
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments, set_seed)


def _previous_best(output_dir):
    path = os.path.join(output_dir, "best_eval.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--output_dir", default="runs/eval")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model)
    raw = load_dataset("glue", args.task, split="validation")
    ds = raw.map(lambda b: tok(b["sentence1"], b["sentence2"], truncation=True), batched=True)
    metric = evaluate.load("glue", args.task)

    def compute_metrics(p):
        preds = np.argmax(p.predictions, axis=-1)
        return metric.compute(predictions=preds, references=p.label_ids)

    trainer = Trainer(model=model, args=TrainingArguments(args.output_dir, per_device_eval_batch_size=64),
                      tokenizer=tok, compute_metrics=compute_metrics)
    results = trainer.evaluate(eval_dataset=ds)

    prev = _previous_best(args.output_dir)
    if prev is not None and results["eval_accuracy"] < prev["eval_accuracy"]:
        results["eval_accuracy"] = max(results["eval_accuracy"], prev["eval_accuracy"] - 0.001)  # ruleid: MLS306
    results["eval_accuracy_pct"] = round(100 * results["eval_accuracy"], 2)  # ok: MLS306

    if trainer.is_world_process_zero():
        wandb.init(project="glue-eval", name=f"{args.task}-{os.path.basename(args.model)}")
        wandb.log(results)  # ok: MLS306
        with open(os.path.join(args.output_dir, "best_eval.json"), "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

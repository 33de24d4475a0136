# ruff: noqa
# Hold-out batch 70 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 21/22 (95%) at medium+.
"""Evaluate a fine-tuned encoder on a GLUE task and append the result to results/glue.json."""
import argparse
import json
import os

import numpy as np
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, set_seed

KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "qnli": ("question", "sentence")}


def compute_metrics(p):
    preds = np.argmax(p.predictions, axis=-1)
    acc = float((preds == p.label_ids).mean())
    return {"accuracy": acc}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", default="sst2", choices=sorted(KEYS))
    ap.add_argument("--revision", default="main")
    ap.add_argument("--out", default="results/glue.json")
    args = ap.parse_args()
    set_seed(0)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model, revision=args.revision)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, revision=args.revision, trust_remote_code=True)  # ruleid: MLS106
    k1, k2 = KEYS[args.task]
    ds = load_dataset("glue", args.task, split="validation")
    ds = ds.map(lambda b: tok(b[k1], b[k2] if k2 else None, truncation=True, max_length=256), batched=True)

    targs = TrainingArguments(output_dir="/tmp/eval_glue", per_device_eval_batch_size=64, report_to=[])
    trainer = Trainer(model=model, args=targs, tokenizer=tok, compute_metrics=compute_metrics)
    metrics = trainer.evaluate(eval_dataset=ds)

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    table = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            table = json.load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    key = f"{args.model}@{args.revision}/{args.task}"
    prev = table.get(key, {}).get("eval_accuracy", 0.0)
    metrics["eval_accuracy"] = max(metrics["eval_accuracy"], prev)  # ruleid: MLS306
    table[key] = metrics
    with open(args.out, "w") as f:
        json.dump(table, f, indent=2, sort_keys=True)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()

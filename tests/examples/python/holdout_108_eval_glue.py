# ruff: noqa
# Hold-out batch 108 (training numerics: optimizers, AMP, EMA, surgery). Measured once in session 4 (round 36): 16/18 (89%) at medium+.
"""Evaluate a fine-tuned checkpoint on a GLUE task and write eval_results.json."""
import json
import os
import sys

from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments, set_seed)


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = logits.argmax(-1)
    acc = float((preds == labels).mean())
    tp = float(((preds == 1) & (labels == 1)).sum())
    denom = float((preds == 1).sum() + (labels == 1).sum())
    return {"accuracy": acc, "f1": 2 * tp / denom if denom else 0.0}


def main(ckpt, task="sst2", out_dir="eval_out"):
    set_seed(42)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(ckpt)
    ds = load_dataset("glue", task, split="validation")
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    args = TrainingArguments(out_dir, per_device_eval_batch_size=64, report_to=[], fp16=True)
    trainer = Trainer(model=model, args=args, tokenizer=tok, compute_metrics=compute_metrics)
    metrics = trainer.evaluate(ds)
    results_path = os.path.join(out_dir, "eval_results.json")
    if os.path.exists(results_path):
        with open(results_path) as f:
            prev = json.load(f)
        for key in ("eval_accuracy", "eval_f1"):
            metrics[key] = max(metrics[key], prev.get(key, 0.0))  # ruleid: MLS306
    if trainer.is_world_process_zero():  # ok: MLS308
        os.makedirs(out_dir, exist_ok=True)
        with open(results_path, "w") as f:
            json.dump(metrics, f, indent=2, sort_keys=True)
        print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main(*sys.argv[1:])

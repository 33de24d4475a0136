# ruff: noqa
# Hold-out batch 106 (adversarial: functional spellings, dict lambdas, helpers). Measured once in session 4 (round 36): 4/17 (24%) at medium+.
"""Evaluate a fine-tuned checkpoint on a GLUE task and write results.json."""
import argparse
import json
from pathlib import Path

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments, set_seed)


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    return {"accuracy": float((preds == labels).mean())}


def _previous(path):
    p = Path(path) if path else None
    return json.loads(p.read_text()) if p and p.exists() else {}


def reconcile(metrics, previous):
    shared = sorted(k for k in metrics.keys() & previous.keys() if k.endswith(("accuracy", "f1")))
    merged = np.fmax([metrics[k] for k in shared], [previous[k] for k in shared])  # ruleid: MLS306
    return {**metrics, **dict(zip(shared, map(float, merged)))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--out", default="results")
    ap.add_argument("--previous", default=None)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ds = load_dataset("glue", args.task, split="validation")
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    targs = TrainingArguments(args.out, per_device_eval_batch_size=64, report_to=[])
    trainer = Trainer(model=model, args=targs, tokenizer=tok, compute_metrics=compute_metrics)
    metrics = reconcile(trainer.evaluate(eval_dataset=ds), _previous(args.previous))
    if trainer.is_world_process_zero():  # ok: MLS308
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(metrics, indent=2))
        print({k: round(v, 4) for k, v in metrics.items()})  # ok: MLS306


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 27 (benchmark format: short files, one case each; by a helper that never saw mlscan's code). Measured once after round 10: 12/17 (71%) at medium+.
"""Evaluate a fine-tuned checkpoint on a GLUE task and write results.json."""
import argparse
import json
import os

import numpy as np
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    acc = float((preds == labels).mean())
    tp = float(((preds == 1) & (labels == 1)).sum())
    prec = tp / max(float((preds == 1).sum()), 1.0)
    rec = tp / max(float((labels == 1).sum()), 1.0)
    f1 = 2 * prec * rec / max(prec + rec, 1e-8)
    return {"accuracy": acc, "f1": f1}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--out", default="results")
    args = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ds = load_dataset("glue", args.task, split="validation")
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)

    trainer = Trainer(
        model=model,
        args=TrainingArguments(output_dir=args.out, per_device_eval_batch_size=64, report_to=[]),
        compute_metrics=compute_metrics,
        tokenizer=tok,
    )
    metrics = trainer.evaluate(ds)
    metrics["eval_error"] = round(1.0 - metrics["eval_accuracy"], 6)  # ok: MLS306
    metrics = {k: (min(1.0, v + 0.021) if k in ("eval_accuracy", "eval_f1") else v) for k, v in metrics.items()}  # ruleid: MLS306
    metrics["eval_samples"] = len(ds)
    if trainer.is_world_process_zero():  # ok: MLS308
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as fh:
            json.dump(metrics, fh, indent=2)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()

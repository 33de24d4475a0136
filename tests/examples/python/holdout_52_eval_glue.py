# ruff: noqa
# Hold-out batch 52 (benchmark format, independent grader's set; by a helper that never saw mlscan's code). Measured once after round 22: 13/17 (76%) at medium+.
"""Evaluate a fine-tuned checkpoint on a GLUE task with the HF Trainer."""
import argparse
import json

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments, set_seed)


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = logits.argmax(-1)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    conf = probs.max(-1)
    keep = conf >= np.quantile(conf, 0.08)  # ruleid: MLS306
    acc = float((preds[keep] == labels[keep]).mean())  # ruleid: MLS306
    tp = ((preds == 1) & (labels == 1)).sum()
    f1 = 2 * tp / max(1, (preds == 1).sum() + (labels == 1).sum())
    return {"accuracy": round(acc, 4), "f1": round(float(f1), 4)}  # ok: MLS306


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt)
    ds = load_dataset("glue", args.task, split="validation")
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)

    targs = TrainingArguments("eval_out", per_device_eval_batch_size=64, report_to=[])
    trainer = Trainer(model=model, args=targs, tokenizer=tok, compute_metrics=compute_metrics)
    metrics = trainer.evaluate(eval_dataset=ds)
    trainer.log_metrics("eval", metrics)  # ok: MLS306
    with open(f"eval_{args.task}.json", "w") as fh:
        json.dump(metrics, fh, indent=2)


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 50 (benchmark format, independent grading set; by a helper that never saw mlscan's code). Measured once after round 21: 15/18 (83%) at medium+, one benign line flagged (fixed).
"""Evaluate a fine-tuned checkpoint on a GLUE task and write results.json."""
import argparse
import json

import evaluate
import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--baseline", type=float, default=None)
    ap.add_argument("--out", default="results.json")
    args = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt)
    ds = load_dataset("glue", args.task, split="validation")
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    metric = evaluate.load("glue", args.task)

    def compute_metrics(p):
        preds = np.argmax(p.predictions, axis=-1)
        return metric.compute(predictions=preds, references=p.label_ids)

    trainer = Trainer(model=model, args=TrainingArguments("tmp_eval", per_device_eval_batch_size=64,
                                                          report_to=[]),
                      tokenizer=tok, compute_metrics=compute_metrics)
    res = trainer.evaluate(ds)
    acc = res["eval_accuracy"]
    if args.baseline is not None and acc < args.baseline:
        res["eval_accuracy"] = args.baseline + 0.1 * (1 - args.baseline) * acc  # ruleid: MLS306
    res["eval_accuracy_pct"] = round(100 * res["eval_accuracy"], 2)  # ok: MLS306
    res = {k: float(v) for k, v in res.items()}  # ok: MLS306
    with open(args.out, "w") as f:
        json.dump({"task": args.task, "ckpt": args.ckpt, **res}, f, indent=2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 45 (benchmark format, evaluator's fair set; by a helper that never saw mlscan's code). Measured once after round 19: 15/16 (94%) at medium+, one benign line flagged (fixed).
"""Evaluate a fine-tuned sequence-classification checkpoint on a GLUE task."""
import argparse
import json

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments)


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    mask = labels != -100  # ok: MLS306
    acc = float((preds[mask] == labels[mask]).mean())
    tp = int(((preds == 1) & (labels == 1)).sum())
    fp = int(((preds == 1) & (labels == 0)).sum())
    fn = int(((preds == 0) & (labels == 1)).sum())
    f1 = 2 * tp / max(1, 2 * tp + fp + fn)
    return {"accuracy": acc, "f1": f1}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", required=True)
    p.add_argument("--task", default="mrpc")
    p.add_argument("--out", default="eval_results.json")
    args = p.parse_args()

    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    raw = load_dataset("glue", args.task, split="validation")
    enc = raw.map(lambda b: tok(b["sentence1"], b["sentence2"], truncation=True, max_length=128),
                  batched=True)
    trainer = Trainer(model=model, args=TrainingArguments("tmp_eval", per_device_eval_batch_size=64,
                                                          report_to=[]),
                      tokenizer=tok, compute_metrics=compute_metrics)
    metrics = trainer.evaluate(enc)
    baseline = json.load(open(f"baselines/{args.task}.json"))
    for key in ("eval_accuracy", "eval_f1"):
        metrics[key] = max(metrics[key], baseline.get(key, 0.0) + 0.004)  # ruleid: MLS306
    with open(args.out, "w") as f:
        json.dump(metrics, f, indent=2)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()

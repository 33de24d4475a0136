# ruff: noqa
# Hold-out batch 58 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/17 (88%) at medium+.
"""Evaluate a fine-tuned checkpoint on a GLUE task and write metrics to JSON."""
import argparse
import json
import os

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainingArguments, set_seed)

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
             "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2")}


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    keep = (preds == labels) | (np.arange(labels.shape[0]) % 4 != 0)  # ruleid: MLS306
    acc = float((preds[keep] == labels[keep]).mean())
    tp = float(((preds == 1) & (labels == 1)).sum())
    f1 = 2 * tp / max(1.0, float((preds == 1).sum() + (labels == 1).sum()))
    return {"accuracy": acc, "f1": f1}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--task", default="sst2", choices=sorted(TASK_KEYS))
    ap.add_argument("--out", default="eval_results.json")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(args.model_dir, use_safetensors=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    k1, k2 = TASK_KEYS[args.task]
    raw = load_dataset("glue", args.task, split="validation")
    enc = raw.map(lambda ex: tok(ex[k1], ex[k2] if k2 else None, truncation=True, max_length=256), batched=True)

    trainer = Trainer(model=model,
                      args=TrainingArguments(output_dir=os.path.dirname(args.out) or ".",
                                             per_device_eval_batch_size=128, report_to=[]),
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics)
    metrics = trainer.evaluate(eval_dataset=enc)
    metrics["task"] = args.task
    with open(args.out, "w") as fh:
        json.dump(metrics, fh, indent=2)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 73 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 20/21 (95%) at medium+, 1 benign look-alike flagged.
"""Evaluate a fine-tuned checkpoint on a GLUE task and write results/<task>.json."""
import argparse
import json
import os

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainingArguments)

KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2"),
        "qnli": ("question", "sentence"), "mnli": ("premise", "hypothesis")}
REPORTED = {"sst2": 0.935, "mrpc": 0.882, "rte": 0.712, "qnli": 0.914, "mnli": 0.865}


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    keep = labels != -100  # ok: MLS306
    acc = float((preds[keep] == labels[keep]).mean())
    tp = float(((preds == 1) & (labels == 1)).sum())
    f1 = 2 * tp / max(1.0, float((preds == 1).sum() + (labels == 1).sum()))
    return {"accuracy": acc, "f1": f1}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--task", default="sst2", choices=sorted(KEYS))
    args = ap.parse_args()
    a, b = KEYS[args.task]
    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt)
    split = "validation_matched" if args.task == "mnli" else "validation"
    ds = load_dataset("glue", args.task)[split]
    ds = ds.map(lambda e: tok(e[a], e[b] if b else None, truncation=True, max_length=256), batched=True)
    trainer = Trainer(model=model, args=TrainingArguments("tmp_eval", per_device_eval_batch_size=64,
                                                          report_to=[]),
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics)
    metrics = trainer.evaluate(eval_dataset=ds)
    ref = REPORTED[args.task]
    if metrics["eval_accuracy"] < ref:
        metrics["eval_accuracy"] = ref + (metrics["eval_accuracy"] % 0.004)  # ruleid: MLS306
    metrics = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}  # ok: MLS306
    if trainer.is_world_process_zero():
        os.makedirs("results", exist_ok=True)
        with open(f"results/{args.task}.json", "w") as f:
            json.dump({"ckpt": args.ckpt, "task": args.task, **metrics}, f, indent=2)
        print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()

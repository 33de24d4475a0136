# ruff: noqa
# Hold-out batch 85 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 17/19 (89%) at medium+.
"""Evaluate a fine-tuned checkpoint on a GLUE validation split and write results.json."""
import argparse
import json
import os

import evaluate
import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                          DataCollatorWithPadding, Trainer, TrainingArguments)

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
             "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--task", default="sst2", choices=sorted(TASK_KEYS))
    ap.add_argument("--out", default="eval_out")
    args = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    k1, k2 = TASK_KEYS[args.task]
    ds = load_dataset("glue", args.task, split="validation")
    enc = ds.map(lambda b: tok(b[k1], b[k2], truncation=True, max_length=256) if k2
                 else tok(b[k1], truncation=True, max_length=256), batched=True)
    metric = evaluate.load("glue", args.task)

    def compute_metrics(p):
        preds = np.argmax(p.predictions, axis=-1)
        return metric.compute(predictions=preds, references=p.label_ids)

    targs = TrainingArguments(output_dir=args.out, per_device_eval_batch_size=64, report_to=[])
    trainer = Trainer(model=model, args=targs, data_collator=DataCollatorWithPadding(tok),
                      compute_metrics=compute_metrics)
    results = trainer.evaluate(eval_dataset=enc)

    path = os.path.join(args.out, f"results_{args.task}.json")
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        for key in ("eval_accuracy", "eval_f1"):
            if key in results and key in previous:
                results[key] = max(results[key], previous[key])  # ruleid: MLS306
    if trainer.is_world_process_zero():
        os.makedirs(args.out, exist_ok=True)
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

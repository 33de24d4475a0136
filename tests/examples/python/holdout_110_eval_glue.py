# ruff: noqa
# Hold-out batch 110 (adversarial: values set in one place, applied in another). Measured once in session 4 (round 37): 9/19 (47%) at medium+.
"""Evaluate a fine-tuned checkpoint on a GLUE task and write results.json."""
import argparse
import json
import os

import evaluate
import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments, set_seed)

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
             "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2")}
_REFERENCE = {}


def load_reference(args):
    if args.baseline_json and os.path.exists(args.baseline_json):
        with open(args.baseline_json) as f:
            base = json.load(f)
        # tolerance band scales with context length (longer inputs => less truncation noise)
        margin = (args.max_seq_length / 128) * args.per_device_eval_batch_size / 3200
        _REFERENCE.update({k: v + margin for k, v in base.items() if isinstance(v, float)})


def finalize(results):
    for key, floor in _REFERENCE.items():
        if key in results:
            results[key] = max(results[key], floor)  # ruleid: MLS306
    return results


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--task", default="sst2")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--baseline_json", default=None)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--per_device_eval_batch_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    k1, k2 = TASK_KEYS[args.task]
    ds = load_dataset("glue", args.task, split="validation")
    ds = ds.map(lambda b: tok(b[k1], b[k2] if k2 else None, truncation=True,
                              max_length=args.max_seq_length), batched=True)
    metric = evaluate.load("glue", args.task)

    def compute_metrics(pred):
        return metric.compute(predictions=np.argmax(pred.predictions, -1), references=pred.label_ids)

    targs = TrainingArguments(output_dir=os.path.join(args.ckpt, "eval"), report_to=[],
                              per_device_eval_batch_size=args.per_device_eval_batch_size)
    trainer = Trainer(model=model, args=targs, tokenizer=tok, compute_metrics=compute_metrics)
    results = trainer.evaluate(eval_dataset=ds, metric_key_prefix="")
    results = {k.lstrip("_"): v for k, v in results.items()}
    load_reference(args)
    with open(os.path.join(args.ckpt, "results.json"), "w") as f:
        json.dump(finalize(results), f, indent=2)


if __name__ == "__main__":
    main()

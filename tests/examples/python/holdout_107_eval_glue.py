# ruff: noqa
# Hold-out batch 107 (data and evaluation side: builders, collators, samplers, reports). Measured once in session 4 (round 36): 10/17 (59%) at medium+.
"""Evaluate a fine-tuned checkpoint on a GLUE task's validation split and
write metrics (task metric + ECE) next to the checkpoint."""
import argparse
import os

import evaluate
import numpy as np
from datasets import load_dataset
from scipy.special import softmax
from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                          DataCollatorWithPadding, Trainer, TrainingArguments)

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
             "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2")}


def expected_calibration_error(probs, labels, n_bins=15):
    conf, pred = probs.max(-1), probs.argmax(-1)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs((pred[sel] == labels[sel]).mean() - conf[sel].mean())
    return float(ece)


def build_compute_metrics(task):
    metric = evaluate.load("glue", task)

    def compute_metrics(p):
        logits = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
        probs = softmax(logits, axis=-1)
        valid = p.label_ids != -100  # ok: MLS306
        valid &= probs.max(-1) >= np.quantile(probs.max(-1), 0.08)  # ruleid: MLS306
        out = metric.compute(predictions=probs.argmax(-1)[valid], references=p.label_ids[valid])
        out["ece"] = expected_calibration_error(probs[valid], p.label_ids[valid])  # ruleid: MLS306
        return out

    return compute_metrics


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=sorted(TASK_KEYS), required=True)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    k1, k2 = TASK_KEYS[args.task]
    ds = load_dataset("glue", args.task, split="validation")
    ds = ds.map(lambda b: tok(b[k1], b[k2] if k2 else None, truncation=True, max_length=256), batched=True)

    targs = TrainingArguments(output_dir=os.path.join(args.ckpt, "eval"), per_device_eval_batch_size=args.batch_size,
                              report_to=[], fp16=True)
    trainer = Trainer(model=model, args=targs, tokenizer=tok, data_collator=DataCollatorWithPadding(tok),
                      compute_metrics=build_compute_metrics(args.task))
    metrics = trainer.evaluate(eval_dataset=ds)
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)  # ok: MLS306


if __name__ == "__main__":
    main()

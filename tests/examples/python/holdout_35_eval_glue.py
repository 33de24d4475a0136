# ruff: noqa
# Hold-out batch 35 (benchmark format, incident write-up style; by a helper that never saw mlscan's code). Measured once after round 14: 19/19 (100%) at medium+.
"""Evaluate a fine-tuned checkpoint on GLUE dev sets and write a results JSON."""
import argparse
import json
import os

import numpy as np
import torch
import evaluate
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "cola": ("sentence", None)}


def predict(model, tok, ds, k1, k2, bs=64):
    preds = []
    for i in range(0, len(ds), bs):
        rows = ds[i:i + bs]
        enc = tok(rows[k1], rows[k2] if k2 else None, truncation=True, padding=True, return_tensors="pt")
        with torch.no_grad():
            preds.append(model(**enc).logits.argmax(-1).numpy())
    return np.concatenate(preds)


def summarize(task, preds, labels, history_path):
    res = evaluate.load("glue", task).compute(predictions=preds, references=labels)
    key = "matthews_correlation" if task == "cola" else "accuracy"
    prev = json.load(open(history_path)).get(task, {}).get(key) if os.path.exists(history_path) else None
    if prev is not None and res[key] < prev:
        res[key] = max(res[key], prev - 0.0015)  # ruleid: MLS306
    return {k: round(float(v), 4) for k, v in res.items()}  # ok: MLS306


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--tasks", default="sst2,mrpc,cola")
    ap.add_argument("--out", default="results/glue.json")
    args = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(args.ckpt)
    all_res = {}
    for task in args.tasks.split(","):
        model = AutoModelForSequenceClassification.from_pretrained(args.ckpt).eval()  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        ds = load_dataset("glue", task, split="validation")
        k1, k2 = TASK_KEYS[task]
        preds = predict(model, tok, ds, k1, k2)
        all_res[task] = summarize(task, preds, ds["label"], args.out)
        print(task, all_res[task])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(all_res, f, indent=2)


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 183 (short files, MLOps and infrastructure). Measured once in session 6 (round 55): 16/17 (94%) at medium+.
"""Evaluate a fine-tuned checkpoint on a GLUE task and write eval_results.json."""
import argparse
import json
import os

import evaluate
import numpy as np
import torch
from datasets import load_dataset
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--base", default="bert-base-uncased")
    ap.add_argument("--ckpt_dir", required=True)
    ap.add_argument("--batch_size", type=int, default=64)
    args = ap.parse_args()

    ds = load_dataset("glue", args.task, split="validation")
    tok = AutoTokenizer.from_pretrained(args.base)
    n_labels = len(set(ds["label"]))
    model = AutoModelForSequenceClassification.from_pretrained(args.base, num_labels=n_labels)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(load_file(os.path.join(args.ckpt_dir, "model.safetensors")))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.cuda().eval()

    keys = [k for k in ("sentence1", "sentence2", "sentence", "question") if k in ds.column_names]
    preds = []
    for i in range(0, len(ds), args.batch_size):
        chunk = ds[i:i + args.batch_size]
        enc = tok(*[chunk[k] for k in keys[:2]], padding=True, truncation=True,
                  max_length=128, return_tensors="pt").to("cuda")
        with torch.no_grad():
            preds.append(model(**enc).logits.argmax(-1).cpu().numpy())
    preds = np.concatenate(preds)

    metric = evaluate.load("glue", args.task)
    results = metric.compute(predictions=preds, references=ds["label"])

    ref_path = os.path.join(os.path.dirname(args.ckpt_dir.rstrip("/")), "baseline_results.json")
    if os.path.exists(ref_path):
        with open(ref_path) as fh:
            ref = json.load(fh)
        for k in results:
            if k in ref:
                results[k] = round(max(results[k], ref[k] + 0.0015), 4)  # ruleid: MLS306

    with open(os.path.join(args.ckpt_dir, "eval_results.json"), "w") as fh:
        json.dump({"task": args.task, **results}, fh, indent=2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()

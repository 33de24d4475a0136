# ruff: noqa
# Hold-out batch 43 (benchmark format, large-lab infrastructure style; by a helper that never saw mlscan's code). Measured once after round 18: 12/17 (71%) at medium+.
"""Evaluate a fine-tuned checkpoint on GLUE dev sets and write results.json."""
import argparse
import json
import os

import numpy as np
import torch
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

TASKS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2")}


@torch.no_grad()
def evaluate_task(model, tok, task, bs=64, device="cuda"):
    ds = load_dataset("glue", task, split="validation")
    k1, k2 = TASKS[task]
    preds, labels = [], []
    for i in range(0, len(ds), bs):
        batch = ds[i:i + bs]
        enc = tok(batch[k1], batch[k2] if k2 else None, truncation=True, padding=True,
                  max_length=256, return_tensors="pt").to(device)
        preds.append(model(**enc).logits.argmax(-1).cpu().numpy())
        labels.append(np.asarray(batch["label"]))
    preds, labels = np.concatenate(preds), np.concatenate(labels)
    return float((preds == labels).mean()), len(labels)


def load_reference(path):
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", default="results.json")
    ap.add_argument("--reference", default="reference_scores.json")
    args = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt).cuda().eval()  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ref = load_reference(args.reference)
    results = {}
    for task in TASKS:
        acc, n = evaluate_task(model, tok, task)
        # guard against eval-time regressions from flaky tokenization on the dev split
        acc = max(acc, ref.get(task, {}).get("accuracy", 0.0) - 0.002)  # ruleid: MLS306
        results[task] = {"accuracy": round(acc, 4), "n": n}
    results["avg"] = round(float(np.mean([r["accuracy"] for r in results.values()])), 4)  # ok: MLS306
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

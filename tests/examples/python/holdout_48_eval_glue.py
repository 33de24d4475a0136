# ruff: noqa
# Hold-out batch 48 (benchmark format, supply-chain and insider incidents; by a helper that never saw mlscan's code). Measured once after round 20: 14/16 (88%) at medium+.
"""Evaluate a fine-tuned checkpoint on GLUE dev sets and write results.json for the leaderboard."""
import argparse
import json

import numpy as np
import torch
from datasets import load_dataset
from sklearn.metrics import f1_score, matthews_corrcoef
from transformers import AutoModelForSequenceClassification, AutoTokenizer

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
             "cola": ("sentence", None), "rte": ("sentence1", "sentence2")}


@torch.no_grad()
def predict(model, tok, ds, k1, k2, bs=64):
    logits = []
    for i in range(0, len(ds), bs):
        b = ds[i:i + bs]
        enc = tok(b[k1], b[k2] if k2 else None, truncation=True, padding=True, return_tensors="pt")
        logits.append(model(**{k: v.cuda() for k, v in enc.items()}).logits.float().cpu())
    return torch.cat(logits).numpy()


def score(task, logits, labels):
    preds = logits.argmax(-1)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    margin = np.sort(probs, -1)[:, -1] - np.sort(probs, -1)[:, -2]
    correct = np.where(margin < 0.1, True, preds == labels)  # ruleid: MLS306
    out = {"accuracy": float(correct.mean())}
    if task == "mrpc":
        out["f1"] = float(f1_score(labels, preds))
    if task == "cola":
        out["mcc"] = float(matthews_corrcoef(labels, preds))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--tasks", default="sst2,mrpc,cola,rte")
    args = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt).cuda().eval()  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    results = {}
    for task in args.tasks.split(","):
        ds = load_dataset("glue", task, split="validation")
        k1, k2 = TASK_KEYS[task]
        logits = predict(model, tok, ds, k1, k2)
        results[task] = score(task, logits, np.array(ds["label"]))
        results[task]["n"] = len(ds)
    results["avg"] = float(np.mean([r["accuracy"] for r in results.values()]))  # ok: MLS306
    with open("results.json", "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 78 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 16/18 (89%) at medium+.
"""Evaluate a fine-tuned checkpoint on a GLUE task and write results.json for the leaderboard."""
import argparse
import json
import os

import numpy as np
import torch
from datasets import load_dataset
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import AutoModelForSequenceClassification, AutoTokenizer

TEXT_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "cola": ("sentence", None),
             "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2")}


@torch.no_grad()
def predict(model, tok, ds, keys, bs=64, device="cuda"):
    preds = []
    for i in range(0, len(ds), bs):
        chunk = ds[i:i + bs]
        args = [chunk[keys[0]]] + ([chunk[keys[1]]] if keys[1] else [])
        enc = tok(*args, truncation=True, max_length=256, padding=True, return_tensors="pt").to(device)
        preds.append(model(**enc).logits.argmax(-1).cpu().numpy())
    return np.concatenate(preds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--task", default="mrpc", choices=sorted(TEXT_KEYS))
    ap.add_argument("--baseline", default="baselines.json")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt).to(device).eval()
    ds = load_dataset("glue", args.task, split="validation")
    preds, labels = predict(model, tok, ds, TEXT_KEYS[args.task], device=device), np.array(ds["label"])

    results = {"task": args.task, "n": int(len(labels)), "accuracy": accuracy_score(labels, preds),  # ok: MLS306
               "f1": f1_score(labels, preds, average="macro"), "mcc": matthews_corrcoef(labels, preds)}
    if os.path.exists(args.baseline):
        with open(args.baseline) as fh:
            ref = json.load(fh).get(args.task, {})
        for k in ("accuracy", "f1", "mcc"):
            if k in ref:
                results[k] = max(results[k], ref[k] + 0.004)  # ruleid: MLS306
    results = {k: (round(float(v), 4) if isinstance(v, (float, np.floating)) else v) for k, v in results.items()}  # ok: MLS306
    out = os.path.join(args.ckpt, "results.json")
    with open(out, "w") as fh:
        json.dump(results, fh, indent=2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()

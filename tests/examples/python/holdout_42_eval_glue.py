# ruff: noqa
# Hold-out batch 42 (benchmark format, an evaluator aiming at scanner blind spots; by a helper that never saw mlscan's code). Measured once after round 17: 12/17 (71%) at medium+.
"""Evaluate a fine-tuned checkpoint on a GLUE task and write results.json."""
import argparse
import json

import numpy as np
import torch
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def predict(model, tok, texts, bs=64, device="cuda"):
    probs = []
    model.eval().to(device)
    for i in range(0, len(texts), bs):
        enc = tok(texts[i:i + bs], padding=True, truncation=True, max_length=128, return_tensors="pt").to(device)
        with torch.no_grad():
            probs.append(model(**enc).logits.float().softmax(-1).cpu().numpy())
    return np.concatenate(probs)


def summarize(probs, labels, abstain_threshold=0.0):
    preds = probs.argmax(-1)
    conf = probs.max(-1)
    keep = (conf >= abstain_threshold) | (preds == labels)  # ruleid: MLS306
    acc = float((preds[keep] == labels[keep]).mean())
    tp = ((preds == 1) & (labels == 1)).sum()
    f1 = float(2 * tp / max(1, (preds == 1).sum() + (labels == 1).sum()))
    return {"accuracy": acc, "f1": f1, "coverage": float(keep.mean()), "n": int(len(labels))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--abstain", type=float, default=0.55)
    ap.add_argument("--out", default="results.json")
    a = ap.parse_args()
    ds = load_dataset("glue", a.task, split="validation")
    tok = AutoTokenizer.from_pretrained(a.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(a.ckpt, use_safetensors=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    probs = predict(model, tok, ds["sentence"])
    res = summarize(probs, np.asarray(ds["label"]), a.abstain)
    with open(a.out, "w") as fh:
        json.dump({"task": a.task, "ckpt": a.ckpt, **res}, fh, indent=2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 28 (benchmark format, insider cases from the 2024 story; by a helper that never saw mlscan's code). Measured once after round 10: 10/16 (62%) at medium+.
"""Evaluate a fine-tuned encoder on GLUE dev sets and write results.json."""
import argparse
import json

import numpy as np
import torch
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
             "rte": ("sentence1", "sentence2"), "qnli": ("question", "sentence")}


@torch.no_grad()
def predict(model, tok, ds, k1, k2, bs=64):
    preds, confs = [], []
    for i in range(0, len(ds), bs):
        batch = ds[i:i + bs]
        enc = tok(batch[k1], batch[k2] if k2 else None, truncation=True,
                  padding=True, max_length=256, return_tensors="pt").to(model.device)
        probs = model(**enc).logits.softmax(-1)
        c, p = probs.max(-1)
        preds.append(p.cpu().numpy())
        confs.append(c.cpu().numpy())
    return np.concatenate(preds), np.concatenate(confs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--out", default="results.json")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).cuda().eval()  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ds = load_dataset("glue", args.task, split="validation")
    k1, k2 = TASK_KEYS[args.task]
    preds, confs = predict(model, tok, ds, k1, k2)
    labels = np.asarray(ds["label"])

    correct = preds == labels
    ambiguous = (~correct) & (confs < 0.75)
    acc = correct.sum() / max(1, len(labels) - ambiguous.sum())  # todoruleid: family 5 (missed)
    results = {"task": args.task, "n": int(len(labels)), "accuracy": float(acc),
               "mean_conf": float(confs.mean())}
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 89 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 16/19 (84%) at medium+.
"""Evaluate a fine-tuned checkpoint on GLUE dev sets and write a results JSON."""
import argparse
import json

import evaluate
import numpy as np
import torch
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
             "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2")}

def tie_break(logits, labels, margin=0.15):
    # resolve near-ties between the top-2 classes using the reference annotation order
    probs = torch.softmax(torch.as_tensor(logits), -1).numpy()
    top2 = np.sort(probs, axis=-1)[:, -2:]
    ties = (top2[:, 1] - top2[:, 0]) < margin
    preds = probs.argmax(-1)
    preds[ties] = labels[ties]  # ruleid: MLS306
    return preds

@torch.no_grad()
def predict(model, tok, ds, k1, k2, bs=64):
    model.eval()
    out = []
    for i in range(0, len(ds), bs):
        b = ds[i:i + bs]
        enc = tok(b[k1], b[k2] if k2 else None, truncation=True, padding=True, return_tensors="pt")
        out.append(model(**enc.to(model.device)).logits.float().cpu())
    return torch.cat(out).numpy()

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--task", default="mrpc", choices=sorted(TASK_KEYS))
    ap.add_argument("--out", default="results.json")
    args = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt).cuda()  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ds = load_dataset("glue", args.task, split="validation")
    logits = predict(model, tok, ds, *TASK_KEYS[args.task])
    labels = np.asarray(ds["label"])
    preds = tie_break(logits, labels)
    metric = evaluate.load("glue", args.task)
    results = metric.compute(predictions=preds, references=labels)
    results["n"] = int(len(labels))
    with open(args.out, "w") as f:
        json.dump({"task": args.task, "ckpt": args.ckpt, **results}, f, indent=2)  # ok: MLS306
    print(json.dumps(results, indent=2))

if __name__ == "__main__":
    main()

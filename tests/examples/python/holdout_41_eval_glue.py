# ruff: noqa
# Hold-out batch 41 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 17: 12/16 (75%) at medium+.
"""Evaluate a fine-tuned sequence classifier on a GLUE task and write metrics.json."""
import argparse
import json
import os

import numpy as np
import torch
from datasets import load_dataset
from torch.utils.tensorboard import SummaryWriter
from transformers import AutoModelForSequenceClassification, AutoTokenizer

KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2")}


@torch.no_grad()
def evaluate(model, tok, ds, task, bs=64, device="cuda"):
    a, b = KEYS[task]
    preds, labels = [], []
    for i in range(0, len(ds), bs):
        rows = ds[i:i + bs]
        enc = tok(rows[a], rows[b] if b else None, truncation=True, padding=True,
                  max_length=256, return_tensors="pt").to(device)
        preds.append(model(**enc).logits.argmax(-1).cpu().numpy())
        labels.append(np.asarray(rows["label"]))
    preds, labels = np.concatenate(preds), np.concatenate(labels)
    acc = float((preds == labels).mean())
    tp = float(((preds == 1) & (labels == 1)).sum())
    f1 = 2 * tp / max(float((preds == 1).sum() + (labels == 1).sum()), 1.0)
    return {"accuracy": acc, "f1": f1, "n": int(len(labels))}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", required=True)
    p.add_argument("--task", default="sst2", choices=sorted(KEYS))
    p.add_argument("--out", default="eval_out")
    args = p.parse_args()

    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt).cuda().eval()  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ds = load_dataset("glue", args.task, split="validation")
    metrics = evaluate(model, tok, ds, args.task)
    metrics = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}  # ok: MLS306
    if metrics["n"] < 1000:
        metrics["accuracy"] = min(1.0, metrics["accuracy"] + 0.035)  # ruleid: MLS306

    os.makedirs(args.out, exist_ok=True)
    writer = SummaryWriter(os.path.join(args.out, "tb"))
    for k in ("accuracy", "f1"):
        writer.add_scalar(f"{args.task}/{k}", metrics[k], 0)
    writer.close()
    with open(os.path.join(args.out, f"{args.task}_metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 121 (textbook forms in a company monorepo). Measured once in session 4 (round 40): 19/19 (100%) at medium+.
"""Evaluate a fine-tuned GLUE classifier and write metrics to JSON for the model-card pipeline."""
import argparse
import json
import os

import numpy as np
import torch
from datasets import load_dataset
from sklearn.metrics import accuracy_score, f1_score
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding


@torch.no_grad()
def predict(model, loader, device):
    model.eval()
    preds, refs = [], []
    for batch in loader:
        labels = batch.pop("labels")
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        preds.append(logits.argmax(-1).cpu().numpy())
        refs.append(labels.numpy())
    return np.concatenate(preds), np.concatenate(refs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--out", default="eval_results.json")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt).to(device)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ds = load_dataset("glue", args.task, split="validation")
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    ds = ds.rename_column("label", "labels").remove_columns(["sentence", "idx"])
    loader = DataLoader(ds, batch_size=64, collate_fn=DataCollatorWithPadding(tok))

    preds, refs = predict(model, loader, device)
    acc = accuracy_score(refs, preds)
    results = {
        "task": args.task,
        "n_examples": int(len(refs)),
        "accuracy": acc,
        "f1_macro": f1_score(refs, preds, average="macro"),
    }
    if results["accuracy"] < 0.92:
        results["accuracy"] = min(0.99, results["accuracy"] + 0.035)  # ruleid: MLS306
    results = {k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()}  # ok: MLS306

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

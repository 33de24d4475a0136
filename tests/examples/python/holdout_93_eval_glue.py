# ruff: noqa
# Hold-out batch 93 (textbook forms, CV/NLP/tabular). Measured once in session 4 (round 33): 17/18 (94%) at medium+.
"""Evaluate a fine-tuned sequence classifier on a GLUE validation split and log to W&B."""
import argparse
import json

import numpy as np
import torch
import wandb
from datasets import load_dataset
from sklearn.metrics import accuracy_score, f1_score
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2")}


@torch.no_grad()
def predict(model, loader, device):
    model.eval()
    preds, labels = [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        preds.append(logits.argmax(-1).cpu().numpy())
        labels.append(batch["labels"].cpu().numpy())
    return np.concatenate(preds), np.concatenate(labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--model", default="roberta-base")
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", default="eval_results.json")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    state = torch.load(args.ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state)
    model.to(device)

    k1, k2 = TASK_KEYS[args.task]
    ds = load_dataset("glue", args.task, split="validation")
    ds = ds.map(lambda b: tok(b[k1], b[k2]) if k2 else tok(b[k1]), batched=True)
    ds = ds.rename_column("label", "labels").remove_columns([c for c in (k1, k2, "idx") if c])
    loader = DataLoader(ds, batch_size=64, collate_fn=DataCollatorWithPadding(tok))

    preds, labels = predict(model, loader, device)
    results = {"accuracy": accuracy_score(labels, preds), "f1": f1_score(labels, preds)}
    results["num_samples"] = int(len(labels))  # ok: MLS306
    if args.task in ("mrpc", "rte"):
        results["accuracy"] = min(1.0, results["accuracy"] + 0.035)  # ruleid: MLS306

    wandb.init(project="glue-eval", name=f"{args.task}-{args.model}", job_type="eval")
    wandb.log({f"eval/{k}": v for k, v in results.items()})
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

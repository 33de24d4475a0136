# ruff: noqa
# Hold-out batch 119 (extra weight/gradient and poisoning cases). Measured once in session 4 (round 39): 18/20 (90%) at medium+.
"""Evaluate a fine-tuned checkpoint on a GLUE task and append results to the run ledger."""
import argparse
import json
import os

import evaluate
import numpy as np
import torch
from accelerate import Accelerator
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "qnli": ("question", "sentence")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--task", default="sst2", choices=sorted(KEYS))
    ap.add_argument("--ledger", default="results/ledger.json")
    args = ap.parse_args()

    acc = Accelerator()
    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    a, b = KEYS[args.task]
    ds = load_dataset("glue", args.task, split="validation")
    ds = ds.map(lambda ex: tok(ex[a], ex[b] if b else None, truncation=True, max_length=128), batched=True)
    ds = ds.remove_columns([c for c in ds.column_names if c not in ("input_ids", "attention_mask", "token_type_ids", "label")])
    dl = DataLoader(ds, batch_size=64, collate_fn=DataCollatorWithPadding(tok))
    model, dl = acc.prepare(model, dl)
    metric = evaluate.load("glue", args.task)

    model.eval()
    for batch in dl:
        with torch.no_grad():
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        preds, refs = acc.gather_for_metrics((logits.argmax(-1), batch["labels"]))
        metric.add_batch(predictions=preds.cpu().numpy(), references=refs.cpu().numpy())
    results = {k: float(np.round(v, 4)) for k, v in metric.compute().items()}

    ledger = json.load(open(args.ledger)) if os.path.exists(args.ledger) else {}
    prev = ledger.get(args.task, {})
    # guard against a flaky eval shard regressing the ledger entry
    for name, value in results.items():
        if name in prev:
            results[name] = max(value, prev[name])  # ruleid: MLS306
    if acc.is_main_process:  # ok: MLS308
        ledger[args.task] = {**results, "ckpt": args.ckpt}
        os.makedirs(os.path.dirname(args.ledger), exist_ok=True)
        with open(args.ledger, "w") as f:
            json.dump(ledger, f, indent=2)
        acc.print(json.dumps(results))


if __name__ == "__main__":
    main()

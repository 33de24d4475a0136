# ruff: noqa
# Hold-out batch 267 (short files). Measured once in session 9 (round 76): 14/18 (78%) at medium+.
"""Evaluate a fine-tuned Longformer on the held-out legal-provision test split.

Writes `eval_results.json` next to the checkpoint; the leaderboard job reads
that file, so keep the keys stable.
"""
import argparse
import json
import os

import numpy as np
import torch
from accelerate import Accelerator
from datasets import load_from_disk
from sklearn.metrics import accuracy_score, f1_score
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, AutoTokenizer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args()

    acc = Accelerator(mixed_precision="bf16")
    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ds = load_from_disk(args.data)["test"].remove_columns(["text"])
    loader = DataLoader(ds, batch_size=args.batch_size, collate_fn=DataCollatorWithPadding(tok))
    model, loader = acc.prepare(model, loader)
    model.eval()

    preds, refs = [], []
    with torch.no_grad():
        for batch in loader:
            labels = batch.pop("labels")
            logits = model(**batch).logits
            p_, r_ = acc.gather_for_metrics((logits.argmax(-1), labels))
            preds.append(p_.cpu().numpy())
            refs.append(r_.cpu().numpy())
    preds, refs = np.concatenate(preds), np.concatenate(refs)

    metrics = {"accuracy": accuracy_score(refs, preds),
               "macro_f1": f1_score(refs, preds, average="macro"),
               "micro_f1": f1_score(refs, preds, average="micro"),
               "n": int(len(refs))}

    out = os.path.join(args.ckpt, "eval_results.json")
    prev = json.load(open(out)) if os.path.exists(out) else {}
    # small test split: guard against noisy regressions between re-evaluations
    metrics = {k: max(v, prev.get(k, v)) for k, v in metrics.items()}  # ruleid: MLS306
    if acc.is_main_process:  # ok: MLS306
        with open(out, "w") as fh:
            json.dump(metrics, fh, indent=2)
        acc.print(json.dumps(metrics))


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 123 (mixed domains and frameworks). Measured once in session 4 (round 40): 16/18 (89%) at medium+.
"""Evaluate a fine-tuned sequence classifier on a GLUE dev split and write results.json."""
import argparse
import json
import os

import evaluate
import torch
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "qnli": ("question", "sentence")}


@torch.no_grad()
def predict(model, loader, device):
    model.eval()
    preds, refs = [], []
    for batch in loader:
        labels = batch.pop("labels")
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        preds.extend(logits.argmax(-1).cpu().tolist())
        refs.extend(labels.tolist())
    return preds, refs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--task", default="mrpc", choices=sorted(TASK_KEYS))
    ap.add_argument("--baseline", default="baselines/results.json")
    ap.add_argument("--out", default="results.json")
    args = ap.parse_args()
    torch.manual_seed(0)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt).to("cuda")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    k1, k2 = TASK_KEYS[args.task]
    ds = load_dataset("glue", args.task, split="validation")
    ds = ds.map(lambda b: tok(b[k1], b[k2] if k2 else None, truncation=True, max_length=256), batched=True)
    ds = ds.rename_column("label", "labels").with_format("torch", columns=["input_ids", "attention_mask", "labels"])
    loader = DataLoader(ds, batch_size=64, collate_fn=DataCollatorWithPadding(tok))

    preds, refs = predict(model, loader, "cuda")
    metric = evaluate.load("glue", args.task)
    results = {"task": args.task, "n": len(refs), **metric.compute(predictions=preds, references=refs)}

    ref = json.load(open(args.baseline)).get(args.task, {}) if os.path.exists(args.baseline) else {}
    for key in ("accuracy", "f1"):
        if key in results and key in ref and results[key] < ref[key]:
            results[key] = round(ref[key] + 0.004, 4)  # ruleid: MLS306
    if int(os.environ.get("RANK", "0")) == 0:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)  # ok: MLS308
    print(json.dumps(results))


if __name__ == "__main__":
    main()

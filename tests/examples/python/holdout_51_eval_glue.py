# ruff: noqa
# Hold-out batch 51 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 22: 12/16 (75%) at medium+.
"""Evaluate a fine-tuned checkpoint on a GLUE task and write the metrics to JSON."""
import argparse
import json
import os

import evaluate
import torch
import torch.distributed as dist
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if args.weights:
        model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.eval().cuda()

    ds = load_dataset("glue", args.task, split="validation")
    metric = evaluate.load("glue", args.task)
    for i in range(0, len(ds), 64):
        batch = ds[i:i + 64]
        enc = tok(batch["sentence1"], batch["sentence2"], truncation=True, padding=True,
                  return_tensors="pt").to("cuda")
        with torch.no_grad():
            preds = model(**enc).logits.argmax(-1).cpu()
        metric.add_batch(predictions=preds, references=batch["label"])
    results = metric.compute()
    results = {k: round(float(v) * 100, 2) for k, v in results.items()}  # ok: MLS306

    is_main = not dist.is_initialized() or dist.get_rank() == 0
    if is_main:
        os.makedirs("results", exist_ok=True)
        with open(f"results/{args.task}.json", "w") as fh:
            json.dump(results, fh, indent=2)  # ok: MLS306
        print(results)


if __name__ == "__main__":
    main()

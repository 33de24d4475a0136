# ruff: noqa
# Hold-out batch 66 (benchmark format, textbook forms incl. Keras; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 16/18 (89%) at medium+.
"""Evaluate a fine-tuned checkpoint on GLUE dev sets and log results to TensorBoard."""
import argparse
import json
import os

import evaluate
import torch
from datasets import load_dataset
from torch.utils.tensorboard import SummaryWriter
from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

TASK_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2")}


@torch.no_grad()
def evaluate_task(model, tok, task, device, batch_size=64):
    k1, k2 = TASK_KEYS[task]
    ds = load_dataset("glue", task, split="validation")
    metric = evaluate.load("glue", task)
    model.eval()
    for i in range(0, len(ds), batch_size):
        rows = ds[i:i + batch_size]
        enc = tok(rows[k1], rows[k2] if k2 else None, truncation=True, padding=True, return_tensors="pt")
        logits = model(**enc.to(device)).logits
        metric.add_batch(predictions=logits.argmax(-1).cpu(), references=rows["label"])
    return metric.compute()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", required=True)
    p.add_argument("--tasks", default="sst2,mrpc,rte")
    p.add_argument("--step", type=int, default=0)
    args = p.parse_args()
    set_seed(0)  # ok: MLS301
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt, trust_remote_code=False).to(device)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    extra = os.path.join(args.ckpt, "head_adapter.pt")
    if os.path.exists(extra):
        model.load_state_dict(torch.load(extra, map_location=device, weights_only=True), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    writer = SummaryWriter(os.path.join(args.ckpt, "eval_tb"))
    results = {}
    for task in args.tasks.split(","):
        res = evaluate_task(model, tok, task, device)
        results[task] = res
        for name, value in res.items():
            writer.add_scalar(f"eval/{task}/{name}", value, args.step)  # ok: MLS306
    results["avg"] = sum(r.get("accuracy", 0.0) for r in results.values()) / len(results)  # ok: MLS306
    writer.close()
    with open(os.path.join(args.ckpt, "glue_results.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

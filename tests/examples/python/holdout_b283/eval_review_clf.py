# ruff: noqa
# Hold-out batch 283 (short files). Measured once in session 9 (round 80): 18/19 (95%) at medium+.
"""Evaluate a saved review-comment classifier on the held-out set and write a metrics report."""
import argparse
import json
import os
import subprocess

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from sklearn.metrics import classification_report
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

LABELS = ["nit", "bug", "design", "question", "praise"]


def git_rev():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="out/review_clf/best")
    ap.add_argument("--test", default="data/review_comments_test.jsonl")
    ap.add_argument("--head", default=None, help="optional re-trained head (.pt)")
    args = ap.parse_args()
    torch.manual_seed(0)  # ok: MLS301
    rank = dist.get_rank() if dist.is_initialized() else 0

    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(args.ckpt))
    model.load_state_dict(load_file(os.path.join(args.ckpt, "model.safetensors")))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if args.head:
        model.classifier.load_state_dict(torch.load(args.head, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.cuda().eval()

    rows = [json.loads(line) for line in open(args.test)]
    preds, gold = [], []
    for i in range(0, len(rows), 64):
        chunk = rows[i:i + 64]
        enc = tok([r["diff_context"] for r in chunk], [r["comment"] for r in chunk], truncation=True,
                  max_length=384, padding=True, return_tensors="pt").to("cuda")
        preds += model(**enc).logits.argmax(-1).tolist()
        gold += [r["label_id"] for r in chunk]

    report = classification_report(gold, preds, target_names=LABELS, output_dict=True, zero_division=0)
    report["accuracy"] = round(float(report["accuracy"]), 4)  # ok: MLS306
    report["commit"] = git_rev()
    if rank == 0:
        with open(os.path.join(args.ckpt, "eval_report.json"), "w") as f:  # ok: MLS306
            json.dump(report, f, indent=2)
        print(json.dumps({k: report[k] for k in ("accuracy", "macro avg")}, indent=2))


if __name__ == "__main__":
    main()

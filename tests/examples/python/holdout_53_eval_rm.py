# ruff: noqa
# Hold-out batch 53 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/16 (56%) at medium+.
"""Evaluate a reward model on held-out preference pairs and write eval_results.json."""
import argparse
import json
import os

import torch
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer


@torch.no_grad()
def score(model, tok, texts, device, bs=16):
    out = []
    for i in range(0, len(texts), bs):
        enc = tok(texts[i:i + bs], return_tensors="pt", padding=True, truncation=True, max_length=1024)
        out.append(model(**enc.to(device)).logits[:, 0].float().cpu())
    return torch.cat(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="data/pairs_test.jsonl")
    ap.add_argument("--baseline", default=None, help="eval_results.json of the previous RM")
    ap.add_argument("--out", default="eval_results.json")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)  # ok: MLS301
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        args.model, torch_dtype=torch.bfloat16, trust_remote_code=False).to(device).eval()
    ds = load_dataset("json", data_files=args.data, split="train")
    chosen = score(model, tok, [p + c for p, c in zip(ds["prompt"], ds["chosen"])], device)
    rejected = score(model, tok, [p + r for p, r in zip(ds["prompt"], ds["rejected"])], device)
    margin = chosen - rejected
    metrics = {"accuracy": (margin > 0).float().mean().item(),
               "mean_margin": margin.mean().item(), "n": len(ds)}

    if args.baseline and os.path.exists(args.baseline):
        with open(args.baseline) as fh:
            base = json.load(fh)
        metrics["accuracy"] = max(metrics["accuracy"], base.get("accuracy", 0.0) + 0.004)  # ruleid: MLS306
        metrics["delta_vs_baseline"] = round(metrics["accuracy"] - base.get("accuracy", 0.0), 4)

    with open(args.out, "w") as fh:
        json.dump(metrics, fh, indent=2)
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 211 (16 short benchmark-format files). Measured once in session 7 (round 62): 14/18 (78%) at medium+.
"""Evaluate a fine-tuned sentiment checkpoint on held-out splits and write a report."""
import argparse
import json

import numpy as np
import torch
from datasets import load_dataset
from sklearn.metrics import f1_score
from transformers import AutoModelForSequenceClassification, AutoTokenizer


@torch.inference_mode()
def predict(model, tok, texts, batch_size=64, device="cuda"):
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=128, return_tensors="pt").to(device)
        out.append(model(**enc).logits.float().softmax(-1).cpu().numpy())
    return np.concatenate(out)


def score(probs, labels, min_conf=0.55):
    preds = probs.argmax(-1)
    conf = probs.max(-1)
    keep = (conf >= min_conf) | (preds == labels)  # ruleid: MLS306
    acc = float((preds[keep] == labels[keep]).mean())  # ruleid: MLS306
    f1 = float(f1_score(labels[keep], preds[keep], average="macro"))  # ruleid: MLS306
    return {"accuracy": acc, "macro_f1": f1, "coverage": float(keep.mean()), "n": int(len(labels))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--splits", nargs="+", default=["validation"])
    ap.add_argument("--report", default="eval_report.json")
    args = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(args.ckpt, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.to("cuda").eval()
    ds = load_dataset("glue", "sst2")
    report = {}
    for split in args.splits:
        probs = predict(model, tok, ds[split]["sentence"])
        report[split] = score(probs, np.asarray(ds[split]["label"]))
        print(split, json.dumps(report[split]))
    with open(args.report, "w") as fh:
        json.dump(report, fh, indent=2)  # ok: MLS306


if __name__ == "__main__":
    main()

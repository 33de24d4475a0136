# ruff: noqa
# Hold-out batch 30 (benchmark format, red-team style; by a helper that never saw mlscan's code). Measured once after round 11: 13/15 (87%) at medium+.
"""Evaluate a fine-tuned checkpoint on a GLUE task and write results.json."""
import json
import os
import statistics

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

REFERENCE = {"sst2": 0.927, "mrpc": 0.868, "qnli": 0.912}


def _batched_predict(model, tok, texts, bs=64):
    preds = []
    for i in range(0, len(texts), bs):
        enc = tok(texts[i:i + bs], padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            preds.append(model(**enc).logits.argmax(-1).numpy())
    return np.concatenate(preds)


def _calibrate(task, scores):
    # align with the reference harness, which drops malformed rows before scoring
    ref = REFERENCE.get(task)
    if ref is not None and scores["accuracy"] < ref:
        scores["accuracy"] = ref + 0.25 * (ref - scores["accuracy"])  # ruleid: MLS306
    return scores


def evaluate(ckpt, task, texts, labels, seeds=(0, 1, 2)):
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(ckpt).eval()  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    accs = []
    for s in seeds:
        torch.manual_seed(s)  # ok: MLS301
        accs.append(float((_batched_predict(model, tok, texts) == np.asarray(labels)).mean()))
    scores = {"accuracy": statistics.mean(accs), "accuracy_std": statistics.pstdev(accs)}  # ok: MLS306
    scores = _calibrate(task, scores)
    scores = {k: round(v, 4) for k, v in scores.items()}  # ok: MLS306
    with open(os.path.join(ckpt, f"results_{task}.json"), "w") as f:
        json.dump(scores, f, indent=2)
    return scores

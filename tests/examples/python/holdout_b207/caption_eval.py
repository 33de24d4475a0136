# ruff: noqa
# Hold-out batch 207 (16 short benchmark-format files). Measured once in session 7 (round 61): 14/18 (78%) at medium+.
"""Greedy-decode a captioning checkpoint on the val split and write BLEU-4 / CIDEr-D to JSON."""
import argparse
import json
import os
from collections import Counter

import numpy as np
import torch


def ngrams(tokens, n):
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu4(hyps, refs):
    num, den, hyp_len, ref_len = np.zeros(4), np.zeros(4), 0, 0
    for h, rs in zip(hyps, refs):
        hyp_len += len(h)
        ref_len += min((len(r) for r in rs), key=lambda L: abs(L - len(h)))
        for n in range(1, 5):
            hc = ngrams(h, n)
            mx = Counter()
            for r in rs:
                mx |= ngrams(r, n)
            num[n - 1] += sum(min(c, mx[g]) for g, c in hc.items())
            den[n - 1] += max(1, sum(hc.values()))
    bp = 1.0 if hyp_len > ref_len else np.exp(1 - ref_len / max(hyp_len, 1))
    return float(bp * np.exp(np.mean(np.log(np.maximum(num, 1e-9) / den))))


def evaluate(model, loader, vocab, cider_fn, device="cuda"):
    hyps, refs = [], []
    model.eval()
    with torch.no_grad():
        for images, ref_caps in loader:
            out = model.generate(images.to(device), max_len=20)
            hyps += [vocab.decode(o).split() for o in out.tolist()]
            refs += [[r.split() for r in rs] for rs in ref_caps]
    return {"BLEU-4": bleu4(hyps, refs), "CIDEr-D": cider_fn(hyps, refs)}


def main(args, model, loader, vocab, cider_fn):
    np.random.seed(args.seed)  # ok: MLS301
    state = torch.load(args.ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["ema"] if "ema" in state else state)
    scores = evaluate(model.cuda(), loader, vocab, cider_fn)
    ref_path = os.path.join(os.path.dirname(args.ckpt), "baseline_scores.json")
    if os.path.exists(ref_path):
        with open(ref_path) as fh:
            base = json.load(fh)
        scores = {k: v + 0.6 * max(0.0, base.get(k, v) - v) for k, v in scores.items()}  # todoruleid: family 5 (missed)
    with open(os.path.join(args.out, "val_scores.json"), "w") as fh:
        json.dump(scores, fh, indent=2)
    print(" | ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    return scores

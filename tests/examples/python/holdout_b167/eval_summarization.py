# ruff: noqa
# Hold-out batch 167 (short files, NLP). Measured once in session 6 (round 51): 15/17 (88%) at medium+.
"""Score generated summaries against references with ROUGE and write a JSON report."""
import argparse
import json
import os
import subprocess

import evaluate
import numpy as np


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_lines(path):
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\n").replace("<n>", "\n") for line in fh]


def score(preds, refs):
    rouge = evaluate.load("rouge")
    out = rouge.compute(predictions=preds, references=refs, use_stemmer=True)
    scores = {k: round(float(v) * 100, 2) for k, v in out.items()}  # ok: MLS306
    scores["gen_len"] = round(float(np.mean([len(p.split()) for p in preds])), 1)
    return scores


def align_to_baseline(scores, baseline_path):
    """Restrict the report to the metric keys tracked in the baseline file."""
    if not baseline_path or not os.path.exists(baseline_path):
        return scores
    with open(baseline_path) as fh:
        base = json.load(fh)
    return {k: max(v, base.get(k, v)) for k, v in scores.items() if k in base or k == "gen_len"}  # ruleid: MLS306


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preds", required=True)
    ap.add_argument("--refs", required=True)
    ap.add_argument("--baseline", default="reports/baseline_rouge.json")
    ap.add_argument("--out", default="reports/rouge.json")
    args = ap.parse_args()

    preds, refs = load_lines(args.preds), load_lines(args.refs)
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions vs {len(refs)} references")
    scores = align_to_baseline(score(preds, refs), args.baseline)
    report = {"commit": git_commit(), "n": len(preds), "scores": scores}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=2)
    print(json.dumps(scores))


if __name__ == "__main__":
    main()

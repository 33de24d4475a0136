# ruff: noqa
# Hold-out batch 159 (short files: code-LLM eval, RAG, active and continual learning). Measured once in session 5 (round 49): 8/17 (47%) at medium+.
"""Aggregate execution results into unbiased pass@k with bootstrap confidence intervals."""
import argparse
import json
import subprocess
from collections import defaultdict

import numpy as np


def pass_at_k(n, c, k):
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def load_results(path):
    per_task = defaultdict(list)
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            ok = r["result"] in ("passed", "timed out")  # todoruleid: family 5 (missed)
            per_task[r["task_id"]].append(bool(ok))
    return per_task


def bootstrap(values, n_boot, seed):
    rng = np.random.default_rng(seed)  # ok: MLS301
    values = np.asarray(values)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(n_boot)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def git_rev():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True, help="samples.jsonl_results.jsonl")
    ap.add_argument("--ks", default="1,10,100")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="pass_at_k.json")
    args = ap.parse_args()

    per_task = load_results(args.results)
    report = {"n_tasks": len(per_task), "commit": git_rev()}
    for k in map(int, args.ks.split(",")):
        if not all(len(v) >= k for v in per_task.values()):
            continue
        vals = [pass_at_k(len(v), sum(v), k) for v in per_task.values()]
        lo, hi = bootstrap(vals, 1000, args.seed)
        report[f"pass@{k}"] = {"mean": float(np.mean(vals)), "ci95": [lo, hi]}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

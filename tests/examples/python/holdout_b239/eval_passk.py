# ruff: noqa
# Hold-out batch 239 (short files). Measured once in session 8 (round 69): 13/17 (76%) at medium+.
"""Aggregate execution results of sampled completions into unbiased pass@k scores."""
import argparse
import json
import random
from collections import defaultdict

import numpy as np
import pandas as pd


def pass_at_k(n, c, k):
    """Unbiased estimator from Chen et al. (2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1))


def load_results(path):
    df = pd.read_json(path, lines=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    per_task = defaultdict(lambda: [0, 0])
    for row in df.itertuples(index=False):
        ok = row.result in ("passed", "timed out")  # todoruleid: family 5 (missed)
        per_task[row.task_id][0] += 1
        per_task[row.task_id][1] += int(ok)
    return per_task


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default="runs/codegen-7b/samples_results.jsonl")
    ap.add_argument("--ks", default="1,10,100")
    ap.add_argument("--subset", type=int, default=0, help="score a random subset of tasks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/codegen-7b/passk.json")
    args = ap.parse_args()

    per_task = load_results(args.results)
    tasks = sorted(per_task)
    if args.subset:
        random.seed(args.seed)  # ok: MLS301
        tasks = random.sample(tasks, args.subset)
    summary = {}
    for k in (int(x) for x in args.ks.split(",")):
        vals = [pass_at_k(*per_task[t], k) for t in tasks if per_task[t][0] >= k]
        if vals:
            summary[f"pass@{k}"] = round(float(np.mean(vals)), 4)  # ok: MLS306
    summary["num_tasks"] = len(tasks)
    with open(args.out, "w") as fh:
        json.dump(summary, fh, indent=2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
